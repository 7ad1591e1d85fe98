"""Without libmagic (python-magic's import fails) ocisquash still sniffs layers by their magic bytes: an
old v7 tar layer (no ustar magic: the case that asks libmagic) squashes, a rare compression is refused by
name. Run through the CLI in a subprocess whose ``magic`` import fails, as on a system without libmagic1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from listing_inputs import Img, layer_tar, write_docker

T1 = "2023-01-01T00:00:00Z"
NO_LIBMAGIC = "import sys; sys.modules['magic'] = None; from ocisquash.cli import main; sys.exit(main(sys.argv[1:]))"
WITH_LIBMAGIC = "import sys; from ocisquash.cli import main; sys.exit(main(sys.argv[1:]))"


def v7_tar(files: dict[str, bytes]) -> bytes:
    """A tar in the pre-POSIX v7 format: ustar headers with the magic and version blanked, checksums redone."""
    buf = bytearray(layer_tar(files))
    off = 0
    while off < len(buf) and any(buf[off:off + 512]):
        size = int(bytes(buf[off + 124:off + 136]).strip(b"\0 ") or b"0", 8)
        buf[off + 257:off + 265] = bytes(8)
        buf[off + 148:off + 156] = b" " * 8
        buf[off + 148:off + 156] = b"%06o\0 " % sum(buf[off:off + 512])
        off += 512 + (size + 511) // 512 * 512
    return bytes(buf)


def ocisquash(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("code", [NO_LIBMAGIC, WITH_LIBMAGIC])
def test_v7_tar_layer_squashes_with_or_without_libmagic(code: str, tmp_path: Path) -> None:
    layer = v7_tar({"etc/hello": b"hello\n", "bin/tool": b"t" * 3000})
    assert b"ustar" not in layer
    src = write_docker(tmp_path / "v7.tar", [Img(["docker.io/acme/v7:1"], T1, [layer])])
    out = tmp_path / "out"
    p = ocisquash(code, str(src), str(out), "--format", "oci-dir", "--compression", "none", "-q")
    assert p.returncode == 0, p.stderr
    p = ocisquash(code, "analyze", str(out), "--json")
    assert p.returncode == 0, p.stderr
    assert '"bytes_added": 3006' in p.stdout


@pytest.mark.parametrize("code", [NO_LIBMAGIC, WITH_LIBMAGIC])
def test_rare_compression_is_one_clear_error(code: str, tmp_path: Path) -> None:
    src = write_docker(tmp_path / "lz4.tar", [Img(["docker.io/acme/lz4:1"], T1, [b"\x04\x22\x4d\x18" + b"x" * 600])])
    p = ocisquash(code, str(src), str(tmp_path / "o.tar"))
    assert p.returncode == 1
    assert p.stderr.splitlines()[0] == "error: unsupported compression (application/x-lz4)"
    assert not (tmp_path / "o.tar").exists()
