#!/usr/bin/env python3
"""Coverage-guided fuzzing of every reader with atheris, a bounded time per target.

    tests/fuzz/run.py --seconds 60 [--target outer] [--save testdata/corpus]

Each target runs in its own subprocess (``--child``) seeded with the pure-Python seed images and
the saved corpus; an input that raises anything but ``OcisquashError`` (or crashes) is written to
``testdata/corpus/<target>/crash-*`` and the run fails. New corpus entries found are kept only
when asked (``--save``), and then only small ones, so the committed corpus stays small.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CORPUS = ROOT / "testdata" / "corpus"
sys.path.insert(0, str(HERE.parent))

MAX_SAVED = 4096  # bytes: bigger finds are not kept in the repository


def seeds(target: str) -> list[bytes]:
    from fuzz import images as I

    if target == "outer":
        return [I.tar_of(I.members_docker()), I.tar_of(I.members_oci(codec="zstd")),
                gzip.compress(I.tar_of(I.members_docker(codec="gzip")), mtime=0)]
    if target == "json":
        m = I.members_oci()
        return [m["index.json"], *(v for k, v in m.items() if k.startswith("blobs/") and v[:1] == b"{")]
    if target == "compression":
        lay = I.default_layers()[0]
        return [gzip.compress(lay, mtime=0), I.compress(lay, "zstd"), lay]
    return I.default_layers()


def child(target: str, seconds: int, workdir: str) -> int:
    import atheris

    with atheris.instrument_imports():
        import ocisquash.archive
        import ocisquash.compression
        import ocisquash.formats.dockersave
        import ocisquash.formats.ocilayout
        import ocisquash.merge
        import ocisquash.model
        import ocisquash.sources  # noqa: F401
    from fuzz.targets import TARGETS
    from ocisquash.errors import OcisquashError

    fn = TARGETS[target]

    def one(data: bytes) -> None:
        with contextlib.suppress(OcisquashError):
            fn(data)

    corpus_dir = Path(workdir) / "corpus"
    corpus_dir.mkdir(exist_ok=True)
    for i, s in enumerate(seeds(target)):
        (corpus_dir / f"seed-{i}").write_bytes(s)
    saved = CORPUS / target
    args = [sys.argv[0], str(corpus_dir)] + ([str(saved)] if saved.is_dir() else [])
    args += [f"-max_total_time={seconds}", "-max_len=65536", "-rss_limit_mb=2048", "-timeout=20",
             f"-artifact_prefix={workdir}/", "-print_final_stats=1"]
    atheris.Setup(args, one)
    atheris.Fuzz()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=60, help="per target")
    ap.add_argument("--target", action="append", help="outer, json, compression, layer (default: all)")
    ap.add_argument("--save", action="store_true", help="keep small new corpus entries in testdata/corpus/")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        sys.argv = sys.argv[:1]
        return child(a.child, a.seconds, a.workdir)
    from fuzz.targets import TARGETS

    failed = []
    for target in a.target or list(TARGETS):
        with tempfile.TemporaryDirectory(prefix=f"fuzz-{target}-") as wd:
            # the child ends through libFuzzer's _exit, past any atexit: give it a scratch dir we remove
            env = {**os.environ, "OCISQUASH_FUZZ_TMP": wd}
            r = subprocess.run([sys.executable, __file__, "--child", target, "--seconds", str(a.seconds),
                                "--workdir", wd], capture_output=True, text=True, env=env)
            stats = [ln for ln in r.stderr.splitlines() if ln.startswith(("stat::", "Done", "#"))]
            runs = next((ln.split()[-1] for ln in stats if ln.startswith("stat::number_of_executed_units")), "?")
            print(f"{target}: {runs} inputs in {a.seconds}s, exit {r.returncode}")
            crashes = [p for p in Path(wd).iterdir() if p.name.startswith(("crash-", "timeout-", "oom-", "leak-"))]
            if r.returncode != 0 or crashes:
                failed.append(target)
                (CORPUS / target).mkdir(parents=True, exist_ok=True)
                for c in crashes:
                    dest = CORPUS / target / c.name
                    dest.write_bytes(c.read_bytes())
                    print(f"  saved {dest.relative_to(ROOT)}")
                print("\n".join(r.stderr.splitlines()[-40:]))
            if a.save:
                (CORPUS / target).mkdir(parents=True, exist_ok=True)
                for p in (Path(wd) / "corpus").iterdir():
                    if not p.name.startswith("seed-") and p.stat().st_size <= MAX_SAVED:
                        (CORPUS / target / p.name).write_bytes(p.read_bytes())
    if failed:
        print("FAILED:", ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
