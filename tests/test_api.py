"""The public library API (``import ocisquash``): docs/api.md's example as written, squashes to scratch,
onto a parent and from a layer judged by the umoci oracle, typed-option errors, docstrings, import cost.
"""

from __future__ import annotations

import datetime as dt
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import registryd
from conftest import skip_or_fail
from fixtures import BuiltImage
from listing_inputs import Img, layer_tar, write_docker, write_oci
from oracle import Snapshot, skopeo_inspect

import ocisquash
from ocisquash import Compression, Cut, OutputFormat

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "api.md"
SAMPLE = ROOT / "testdata" / "sample.docker.tar"
TS = dt.datetime(2023, 11, 14, 22, 13, 20, 250000, tzinfo=dt.UTC)


def first_python_block(text: str) -> str:
    m = re.search(r"^```python\n(.*?)^```", text, re.S | re.M)
    assert m, "docs/api.md has no ```python block"
    return m.group(1)


def diff_ids(path: Path | str) -> list[str]:
    with ocisquash.open(path) as src:
        return src.image().diff_ids


# ------------------------------------------------------------------------------------------ the documented example


def test_docs_example_runs_as_is(tmp_path: Path, same_rootfs: Callable[..., Snapshot]) -> None:
    code = first_python_block(DOC.read_text())
    (tmp_path / "testdata").mkdir()
    shutil.copy2(SAMPLE, tmp_path / "testdata" / SAMPLE.name)
    before = set(os.listdir(tmp_path))
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    new = set(os.listdir(tmp_path)) - before
    assert len(new) == 1, f"the example should write one new file in the current directory, wrote {new}"
    out = tmp_path / new.pop()
    assert out.is_file()
    assert "3 layers -> 1" in p.stdout, p.stdout
    info = skopeo_inspect(f"docker-archive:{out}")
    assert len(info["Layers"]) == 1
    assert info["Created"].startswith("2024-01-01T00:00:00")
    same_rootfs(str(SAMPLE), str(out), mtime=True)
    assert (tmp_path / "testdata" / SAMPLE.name).read_bytes() == SAMPLE.read_bytes()  # the input untouched


def test_docs_example_passes_mypy_strict(tmp_path: Path) -> None:
    # py.typed makes the annotations public: a user's strict mypy must accept the documented use.
    example = tmp_path / "example.py"
    example.write_text(first_python_block(DOC.read_text()))
    p = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(example)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr


def test_readme_links_the_api_doc() -> None:
    assert "(docs/api.md)" in (ROOT / "README.md").read_text()
    assert (ROOT / "ocisquash" / "py.typed").is_file()


# ------------------------------------------------------------------------------------------ surface


def _own_doc(obj: Any, name: str) -> str | None:
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    if doc and inspect.isclass(obj) and re.match(rf"{re.escape(obj.__name__)}\(", doc):
        return None  # the signature @dataclass writes when the class has no docstring
    return doc.strip() if doc else None


def test_every_exported_name_has_a_docstring() -> None:
    missing = []
    for name in ocisquash.__all__:
        obj = getattr(ocisquash, name)
        if not _own_doc(obj, name):
            missing.append(name)
        if inspect.isclass(obj) and obj.__module__ in ("ocisquash.api", "ocisquash.apitypes"):
            for attr, member in vars(obj).items():
                if attr.startswith("_") or not (callable(member) or isinstance(member, property | classmethod)):
                    continue
                fn = member.__func__ if isinstance(member, classmethod) else member
                if not (getattr(fn, "__doc__", None) or "").strip():
                    missing.append(f"{name}.{attr}")
    assert not missing, f"no docstring: {missing}"
    assert sorted(ocisquash.__all__) == sorted(set(ocisquash.__all__))
    assert set(ocisquash.__all__) <= set(dir(ocisquash))


def test_the_api_names_the_cli_uses_are_exported() -> None:
    # The CLI is a thin layer over the API: whatever it calls, a library user can call from ``ocisquash``.
    used = set()
    for f in (ROOT / "ocisquash" / "cli").glob("*.py"):
        used |= set(re.findall(r"\bapi\.([A-Za-z_]\w*)", f.read_text()))
    assert {"parse_filters", "safety_limits", "registry_access", "RegistryAccess", "open"} <= used
    for name in sorted(used):
        assert name in ocisquash.__all__, name
        assert getattr(ocisquash, name) is getattr(ocisquash.api, name)


def test_every_exported_name_is_in_the_api_doc() -> None:
    doc = DOC.read_text()
    code = re.findall(r"^```python\n(.*?)^```", doc, re.S | re.M) + re.findall(r"`([^`\n]+)`", doc)
    spoken = set(re.findall(r"[A-Za-z_]\w*", "\n".join(code)))  # the names the doc's code shows
    assert sorted(set(ocisquash.__all__) - spoken) == []


def test_error_classes_are_the_project_ones() -> None:
    from ocisquash import errors

    for name in ("OcisquashError", "UsageError", "FormatError", "DigestMismatch", "MissingBlob", "UnsafePath",
                 "NotFound", "Ambiguous", "LimitExceeded", "OutputError"):
        assert name in ocisquash.__all__
        assert getattr(ocisquash, name) is getattr(errors, name)


def test_import_is_cheap() -> None:
    # The CLI imports the package on every run: the API, codecs, merge and rich must load only when used.
    code = ("import sys, ocisquash; print(sorted(m for m in sys.modules if m.startswith('ocisquash') "
            "or m.split('.')[0] in ('isal', 'zstandard', 'rich', 'typer', 'magic', 'json', 'tarfile')))")
    p = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "['ocisquash', 'ocisquash.errors']"
    # ... and a lazy name still resolves to the real object
    p = subprocess.run([sys.executable, "-c", "import ocisquash.api as a, ocisquash as o; "
                        "assert o.Cut is a.Cut and o.open is a.open; from ocisquash import SquashReport"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr


def test_a_local_run_never_loads_the_http_client(tmp_path: Path) -> None:
    # httpx and httpcore took 70 ms of every run's start: only a docker:// reference loads them
    sample = Path(__file__).resolve().parent.parent / "testdata" / "sample.docker.tar"
    code = ("import sys; from ocisquash.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('httpx', 'httpcore', 'urllib3', 'h11'))"
            " or 'none')")
    for args in (["squash", str(sample), str(tmp_path / "out.tar"), "-q"], ["images", str(tmp_path / "out.tar")],
                 ["validate", str(sample)]):
        p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        assert p.stdout.strip().splitlines()[-1] == "none", (args, p.stdout[-300:])
    p = subprocess.run([sys.executable, "-c", "import sys, ocisquash.registry.format as f; "
                        "f.REGISTRY.claims_reference('docker://127.0.0.1:1/a'); print('httpx' in sys.modules)"],
                       capture_output=True, text=True, timeout=60)
    assert p.stdout.strip() == "False", p.stderr


# ------------------------------------------------------------------------------------------ squashing, by the oracle


def test_squash_to_scratch(trap_oci: BuiltImage, tmp_path: Path, same_rootfs: Callable[..., Snapshot]) -> None:
    out = tmp_path / "flat.tar"
    with ocisquash.open(trap_oci.path) as src:
        image = src.image("latest")
        assert len(image.diff_ids) == 5
        report = image.squash(out, tags=["flat:1"], timestamp=TS, message="flattened")
    assert (report.layers_before, report.layers_after, report.kept_layers) == (5, 1, 0)
    assert report.output == str(out) and report.tags == ["docker.io/library/flat:1"]
    same_rootfs(trap_oci, str(out), mtime=True)
    cfg = skopeo_inspect(f"docker-archive:{out}", config=True)
    assert cfg["created"].startswith("2023-11-14T22:13:20.25")  # skopeo re-encodes it: 2023-11-14T22:13:20.25Z
    assert cfg["history"][-1]["comment"] == "flattened"
    assert report.diff_id == cfg["rootfs"]["diff_ids"][0]


def test_squash_onto_a_parent(trap_oci: BuiltImage, tmp_path: Path, same_rootfs: Callable[..., Snapshot]) -> None:
    by_ref, by_image = tmp_path / "by-ref.oci", tmp_path / "by-image.tar"
    with ocisquash.open(trap_oci.path) as src, ocisquash.open(trap_oci.path) as base:
        parent = base.image("l2")
        image = src.image("latest")
        r1 = image.squash(by_ref, cut=Cut.onto("l2"), format=OutputFormat.OCI_DIR, tags=["sq:1"], timestamp=TS)
        r2 = image.squash(by_image, cut=Cut.onto(parent), compression=Compression.ZSTD, level=5, timestamp=TS)
        want = parent.diff_ids
    for r, out in ((r1, by_ref), (r2, by_image)):
        assert (r.kept_layers, r.layers_after) == (2, 3)
        got = diff_ids(out)
        assert got[:2] == want and len(got) == 3
        same_rootfs(trap_oci, str(out), mtime=True)
    assert (by_ref / "index.json").is_file()  # OutputFormat.OCI_DIR
    with ocisquash.open(by_image) as src:
        assert src.format is OutputFormat.DOCKER
    with tarfile.open(by_image) as t:
        top = json.load(t.extractfile("manifest.json"))[0]["Layers"][-1]  # type: ignore[arg-type]
        assert t.extractfile(top).read(4) == b"\x28\xb5\x2f\xfd"  # type: ignore[union-attr] # zstd, as asked


@pytest.mark.parametrize("cut", ["position", "from-top", "diff-id", "hex-prefix"])
def test_squash_from_a_layer(cut: str, trap_oci: BuiltImage, tmp_path: Path,
                             same_rootfs: Callable[..., Snapshot]) -> None:
    with ocisquash.open(trap_oci.path) as src:
        image = src.image("latest")
        ids = image.diff_ids
        c = {"position": Cut.from_layer(3), "from-top": Cut.from_layer(-3), "diff-id": Cut.from_layer(ids[2]),
             "hex-prefix": Cut.from_layer(ids[2][7:19])}[cut]
        out = tmp_path / "from3.oci.tar"
        report = image.squash(out, cut=c, format=OutputFormat.OCI, timestamp=TS)
    assert (report.kept_layers, report.layers_after) == (2, 3)
    with ocisquash.open(out) as res:
        assert res.format is OutputFormat.OCI
        got = res.image().diff_ids
    assert got[:2] == ids[:2] and got[2] not in ids
    same_rootfs(trap_oci, str(out), mtime=True)


def test_api_and_cli_write_the_same_bytes(trap_docker: BuiltImage, tmp_path: Path) -> None:
    # The API is the CLI's options, typed: the same squash must give byte-identical output.
    api_out, cli_out = tmp_path / "api.tar", tmp_path / "cli.tar"
    ocisquash.squash_image(trap_docker.path, api_out, cut=Cut.from_layer(-2), tags=["x/y:z"], timestamp=TS,
                           compression=Compression.GZIP, level=1, message="m")
    p = subprocess.run([sys.executable, "-m", "ocisquash", str(trap_docker.path), str(cli_out), "--from-layer", "-2",
                        "--tag", "x/y:z", "--timestamp", "2023-11-14T22:13:20.25Z", "--compression", "gzip",
                        "--level", "1", "-m", "m", "-q"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert api_out.read_bytes() == cli_out.read_bytes()


def test_dry_run_writes_nothing_and_reports(tmp_path: Path) -> None:
    report = ocisquash.squash_image(SAMPLE, None)
    assert report.dry_run and report.output is None and report.layers_after == 1 and report.files_dropped == 4
    assert report.bytes_after_uncompressed is not None
    assert report.bytes_after_uncompressed < report.bytes_before_uncompressed


def test_convert_list_and_validate(tmp_path: Path, same_rootfs: Callable[..., Snapshot]) -> None:
    out = tmp_path / "sample.oci"
    with ocisquash.open(SAMPLE) as src:
        [summary] = src.images()
        assert summary.names == ["docker.io/ocisquash/sample:latest"] and len(summary.layers) == 3
        written = src.image(summary.names[0]).write(out, format=OutputFormat.OCI_DIR, compression=Compression.ZSTD)
        assert src.validate().ok
    assert written.format is OutputFormat.OCI_DIR and len(written.layers) == 3
    assert [s.image_id for s in ocisquash.list_images(out)] == [summary.image_id]
    v = ocisquash.validate_input(out)
    assert v.ok and v.blobs_checked >= 4
    manifest = json.loads((out / "blobs" / "sha256" / written.manifest.split(":")[1]).read_bytes())
    assert all(ly["mediaType"].endswith("+zstd") for ly in manifest["layers"])
    same_rootfs(str(SAMPLE), str(out), mtime=True)


def test_validate_reports_a_corrupt_blob(tmp_path: Path) -> None:
    out = tmp_path / "bad.oci"
    ocisquash.convert_image(SAMPLE, out, format=OutputFormat.OCI_DIR)
    index = json.loads((out / "index.json").read_bytes())
    manifest = json.loads((out / "blobs" / "sha256" / index["manifests"][0]["digest"].split(":")[1]).read_bytes())
    blob = out / "blobs" / "sha256" / manifest["layers"][0]["digest"].split(":")[1]
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.write_bytes(bytes(data))
    v = ocisquash.validate_input(out)
    assert not v.ok and v.findings


# ------------------------------------------------------------------------------------------ typed options


def _squash(**kw: Any) -> Callable[[Path], object]:
    return lambda out: ocisquash.squash_image(SAMPLE, out, **kw)


BAD: dict[str, tuple[type[ocisquash.OcisquashError], Callable[[Path], object], str]] = {
    "compression-string": (ocisquash.UsageError, _squash(compression="gzip"), "Compression.GZIP"),
    "level-out-of-range": (ocisquash.UsageError, _squash(level=10), "0 to 9"),
    "zstd-level-out-of-range": (ocisquash.UsageError, _squash(compression=Compression.ZSTD, level=0), "1 to 19"),
    "level-bool": (ocisquash.UsageError, _squash(level=True), "int"),
    "level-string": (ocisquash.UsageError, _squash(level="2"), "int"),
    "naive-timestamp": (ocisquash.UsageError, _squash(timestamp=dt.datetime(2024, 1, 1)), "naive"),
    "timestamp-string": (ocisquash.UsageError, _squash(timestamp="2024-01-01T00:00:00Z"), "datetime"),
    "tags-string": (ocisquash.UsageError, _squash(tags="app:1"), "list"),
    "tag-empty": (ocisquash.UsageError, _squash(tags=[""]), "tag"),
    "tag-invalid": (ocisquash.UsageError, _squash(tags=["UPPER:1"]), "UPPER"),
    "format-string": (ocisquash.UsageError, _squash(format="docker"), "OutputFormat"),
    "cut-string": (ocisquash.UsageError, _squash(cut="parent"), "Cut."),
    "platform-bad": (ocisquash.UsageError, _squash(platform="linux"), "os/arch"),
    "image-empty": (ocisquash.UsageError, _squash(image=""), "reference"),
    "from-layer-out-of-range": (ocisquash.UsageError, _squash(cut=Cut.from_layer(9)), "3 layers"),
    "from-layer-unknown-digest": (ocisquash.UsageError, _squash(cut=Cut.from_layer("sha256:" + "0" * 64)), "no layer"),
    # a hex prefix of digits only stays a digest (squash would read "123456789012" as a position)
    "from-layer-digit-prefix": (ocisquash.UsageError, _squash(cut=Cut.from_layer("123456789012")), "no layer"),
    "image-not-found": (ocisquash.NotFound, _squash(image="nope:1"), "nope"),
    "input-missing": (ocisquash.FormatError, lambda out: ocisquash.squash_image(out.parent / "nothing", out),
                      "no such"),
    "output-is-input": (ocisquash.UsageError, lambda out: ocisquash.squash_image(SAMPLE, SAMPLE), ""),
    "open-not-a-path": (ocisquash.UsageError, lambda out: ocisquash.open(3), "path"),  # type: ignore[arg-type]
    "cut-from-layer-0": (ocisquash.UsageError, lambda out: Cut.from_layer(0), "start at 1"),
    "cut-from-layer-digit-string": (ocisquash.UsageError, lambda out: Cut.from_layer("3"), "int"),
    "cut-from-layer-float": (ocisquash.UsageError, lambda out: Cut.from_layer(2.0), "position"),  # type: ignore[arg-type]
    "cut-onto-nothing": (ocisquash.UsageError, lambda out: Cut.onto(), "needs a parent"),
    "cut-by-hand": (ocisquash.UsageError, lambda out: Cut("layer"), "Cut.from_layer"),
    "cut-unknown-kind": (ocisquash.UsageError, lambda out: Cut("middle"), "kind"),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_options_raise_the_projects_errors(case: str, tmp_path: Path) -> None:
    cls, call, words = BAD[case]
    out = tmp_path / "out.tar"
    with pytest.raises(cls) as e:
        call(out)
    assert words in str(e.value)
    assert not out.exists() and os.listdir(tmp_path) == []  # nothing written, not even a temporary


def test_a_parent_that_is_not_below_the_image_is_a_format_error(tmp_path: Path) -> None:
    flat = tmp_path / "flat.tar"
    ocisquash.squash_image(SAMPLE, flat)  # one new layer: not the sample's bottom layer
    with ocisquash.open(SAMPLE) as src:
        img = src.image()
        with pytest.raises(ocisquash.FormatError, match="prefix"):
            img.squash(tmp_path / "o.tar", cut=Cut.onto(path=flat))
        report = img.squash(tmp_path / "o.tar", cut=Cut.onto(img))  # the control: a parent that is one
    assert report.kept_layers == 3 and not report.squashed


def test_closed_source_refuses_use(tmp_path: Path) -> None:
    with ocisquash.open(SAMPLE) as src:
        img = src.image()
    assert src.closed
    for call in (src.images, src.validate, lambda: img.squash(tmp_path / "o.tar")):
        with pytest.raises(ocisquash.UsageError, match="closed"):
            call()
    assert os.listdir(tmp_path) == []



def _py_with_stdin(code: str, cwd: Path) -> list[str]:
    with SAMPLE.open("rb") as stdin:
        p = subprocess.run([sys.executable, "-c", code], stdin=stdin, cwd=cwd, capture_output=True, text=True,
                           timeout=120)
    assert p.returncode == 0, p.stderr
    return p.stdout.splitlines()


def test_standard_input_is_read_once_to_list_squash_and_write_its_image(tmp_path: Path) -> None:
    # The Image holds the spooled copy open: squashing and writing it read that, not standard input again.
    out = _py_with_stdin("import datetime as dt, ocisquash\n"
                         "ts = dt.datetime(2024, 1, 2, tzinfo=dt.UTC)\n"
                         "with ocisquash.open('-') as src:\n"
                         "    print([s.names for s in src.images()], src.validate().ok)\n"
                         "    image = src.image()\n"
                         "    print(image.squash('out.tar', timestamp=ts).layers_after)\n"
                         "    print(image.write('copy.tar').config == image.id)\n", tmp_path)
    assert out[0] == "[['docker.io/ocisquash/sample:latest']] True"
    assert out[1:] == ["1", "True"]
    ocisquash.squash_image(SAMPLE, tmp_path / "by-path.tar", timestamp=dt.datetime(2024, 1, 2, tzinfo=dt.UTC))
    assert (tmp_path / "out.tar").read_bytes() == (tmp_path / "by-path.tar").read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["by-path.tar", "copy.tar", "out.tar"]  # no spool left behind


def test_squash_image_reads_standard_input(tmp_path: Path, same_rootfs: Callable[..., Snapshot]) -> None:
    out = _py_with_stdin("import ocisquash\nprint(ocisquash.squash_image('-', 'flat.tar').layers_after)\n",
                         tmp_path)
    assert out == ["1"]
    same_rootfs(str(SAMPLE), str(tmp_path / "flat.tar"), mtime=True)


# ------------------------------------------------------------------------------------------ references (the CLI's)

GOOD, OTHER = "acme/good:1", "acme/other:1"


@pytest.fixture(scope="module")
def two_images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Img]:
    """A folder with the same two images (``GOOD`` of two layers, ``OTHER`` of one) as an OCI layout
    directory (``lay``), an OCI layout tar (``lay.tar``) and a docker save tarball (``two.tar``)."""
    d = tmp_path_factory.mktemp("refs")
    good = Img([f"docker.io/{GOOD}"], "2023-01-01T00:00:00Z", [layer_tar({"a": b"a" * 100}), layer_tar({"b": b"b"})])
    other = Img([f"docker.io/{OTHER}"], "2023-01-02T00:00:00Z", [layer_tar({"o": b"o" * 10})])
    lay = write_oci(d / "lay", [good, other])
    with tarfile.open(d / "lay.tar", "w") as t:
        for name in sorted(os.listdir(lay)):
            t.add(lay / name, arcname=name)
    write_docker(d / "two.tar", [good, other])
    return d, good


REFERENCES = {  # the form -> the reference to the GOOD image, from the folder two_images made
    "oci": lambda d: f"oci:{d / 'lay'}:{GOOD}",
    "oci-archive": lambda d: f"oci-archive:{d / 'lay.tar'}:{GOOD}",
    "docker-archive": lambda d: f"docker-archive:{d / 'two.tar'}:{GOOD}",
    "file-ref": lambda d: f"{d / 'two.tar'}:{GOOD}",
}


@pytest.mark.parametrize("form", sorted(REFERENCES))
def test_a_reference_opens_lists_and_squashes_the_image_it_names(form: str, two_images: tuple[Path, Img],
                                                                  tmp_path: Path) -> None:
    d, good = two_images
    text = REFERENCES[form](d)
    with ocisquash.open(text) as src:
        assert src.ref == GOOD and os.path.exists(src.path)
        img = src.image()  # of two images: the one the reference names, with no ref given here
        assert img.id == good.id and len(img.diff_ids) == 2
        assert [str(r.image.image_id) for r in src.rows(src.images())] == [good.id]
        v = src.validate()
        assert v.ok and len(v.images) == 1
        with pytest.raises(ocisquash.UsageError, match="names image 'acme/good:1' and --image names 'acme/other:1'"):
            src.image(OTHER)
        report = img.squash(tmp_path / "img.tar", timestamp=TS)  # reopens by path, for the same image
        assert (report.layers_before, report.layers_after) == (2, 1)
    report = ocisquash.squash_image(text, tmp_path / "flat.tar", timestamp=TS)
    assert (report.layers_before, report.layers_after) == (2, 1)
    assert (tmp_path / "flat.tar").read_bytes() == (tmp_path / "img.tar").read_bytes()
    written = ocisquash.convert_image(text, tmp_path / "copy", format=OutputFormat.OCI_DIR)
    assert written.config == good.id
    assert [str(s.image_id) for s in ocisquash.list_images(text)] == [good.id]  # the named image only
    assert ocisquash.validate_input(text).images == v.images
    with pytest.raises(ocisquash.UsageError, match="names image 'acme/good:1' and --image names 'acme/other:1'"):
        ocisquash.squash_image(text, tmp_path / "no.tar", image=OTHER)
    assert not (tmp_path / "no.tar").exists()


def test_a_path_object_is_never_a_reference(two_images: tuple[Path, Img]) -> None:
    d, good = two_images
    with ocisquash.open(f"oci:{d / 'lay'}") as src:  # the str: a reference to the layout...
        assert src.path == str(d / "lay") and src.ref is None
        assert src.image(GOOD).id == good.id
    with pytest.raises(ocisquash.FormatError, match="no such file"):
        ocisquash.open(Path(f"oci:{d / 'lay'}"))  # ...the Path: a file of that name, and there is none


BAD_REFERENCES = {
    "oci:": "no path after 'oci:'",
    "oci-archive:x.tar:@0": "source index",
    "docker-daemon:app:1": "does not read skopeo's docker-daemon: transport",
    "containers-storage:app:1": "does not read skopeo's containers-storage: transport",
}


@pytest.mark.parametrize("text", sorted(BAD_REFERENCES))
def test_a_bad_reference_is_a_one_line_usage_error(text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for call in (lambda: ocisquash.open(text), lambda: ocisquash.squash_image(text, tmp_path / "o.tar"),
                 lambda: ocisquash.convert_image(text, tmp_path / "o.tar"), lambda: ocisquash.list_images(text)):
        with pytest.raises(ocisquash.UsageError) as e:
            call()
        assert BAD_REFERENCES[text] in str(e.value) and "\n" not in str(e.value)
    assert os.listdir(tmp_path) == []


def test_a_registry_reference_opens_and_squashes(two_images: tuple[Path, Img], tmp_path: Path) -> None:
    problem = registryd.problem()
    if problem is not None:
        skip_or_fail(problem)
    d, good = two_images
    with registryd.Registry(tmp_path / "registry") as r, \
            ocisquash.registry_access(ocisquash.RegistryAccess(tls_verify=False)):
        ref = f"docker://{r.host}/acme/good:1"
        ocisquash.convert_image(REFERENCES["oci"](d), ref)
        with ocisquash.open(ref) as src:
            assert src.ref is None and src.path == ref
            assert src.image().id == good.id
        report = ocisquash.squash_image(ref, tmp_path / "flat.tar", timestamp=TS)
    assert (report.layers_before, report.layers_after) == (2, 1)
    with ocisquash.open(tmp_path / "flat.tar") as out:
        assert len(out.image().diff_ids) == 1

