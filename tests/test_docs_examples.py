"""Every example the documentation shows is run, and prints what the documentation says.

Where the examples come from:

- README.md and every ``docs/*.md``, fenced blocks. A block with ``$ `` prompts is a transcript: each
  ``$ ocisquash ...`` line (an ``ocisquash`` command, maybe after ``VAR=value`` assignments) is run and
  its output (stdout and stderr) compared with the lines below it. A block of bare command lines
  (```` ```sh ````) is a script: each line is run in order. A ```` ```python ```` block is run with the
  interpreter running the tests.
- every command's ``--help`` text (ocisquash/cli/*.py): the lines below ``Examples:`` are a script.
- inline code in the same documents' prose, when it is a whole example: ``ocisquash`` with arguments,
  a pipe into ``ocisquash``, ``source <(…)``, and a Python statement that calls into ``ocisquash`` and
  uses no other free name (run after ``import ocisquash``). A bare command name (``ocisquash images``), a
  Python name (``ocisquash.limits``), a fragment (``with …:``) or a signature is prose, not an example.

What is checked: a transcript's shown output, exactly (after the normalisations below). A script line
has no shown output: it must exit 0 with bash's ``pipefail`` (so every command of a pipe succeeds), print
something (unless it redirects stdout to a file), and print no line that is ``null`` (``jq .Key`` of a
key the JSON does not have prints ``null``: that is how an example can lie).
``source <(…)`` lines are followed by ``complete -p ocisquash`` (the completion must be registered). An
``analyze --ci`` line may exit 1 if every line it prints is a ``fail:`` verdict (its documented way to
report a broken rule). Python blocks must exit 0.

Where they run: a fresh copy of one workspace per block (per ``--help`` text), built here from
testdata/sample.docker.tar and umoci, holding every input the examples name: ``app.tar`` and
``in.tar`` (docker save tarballs of ``app:1.0``), ``debian.tar`` (its base layer alone, as
``debian:bookworm`` and ``debian:12``), ``app.oci.tar`` (``oci-archive``), ``layout/`` and ``multi/``
(an OCI layout where ``app:1.0`` is a linux/amd64 + linux/arm64 index, plus a dangling image),
``all.tar`` (an OCI layout tar with ``acme/app:1`` and ``acme/web:1``, label ``tier=web``), and a
``testdata`` link to the repository's. Paths under ``/tmp/`` are rewritten to the workspace's
``tmp/`` (in the shown output too), ``~`` is the workspace's ``home/``, so an example that writes
files writes them in the workspace.

Stand-ins: ``docker save NAMES`` and ``podman save`` print a tarball of those images from the
workspace, and ``docker load`` checks what it is given with ``ocisquash validate`` and prints
``Loaded image: NAME`` for each name (a ``bin/docker`` and ``bin/podman`` first on PATH). What real
docker, podman and containerd load from ocisquash's output is tested in tests/test_realclients.py;
here the examples' own commands are the subject. ``skopeo`` and ``jq`` are the real ones. Registry
examples (``docker://reg.example/…``) run against a throw-away registry on 127.0.0.1
(tests/registryd.py): ``reg.example`` (and ``pub.example``, ``priv.example``) becomes its address and
``--tls-verify=false`` is added (it speaks plain HTTP); the registry holds ``app:1`` and ``base:12`` first.

Not run, and why: ``NOT_RUN`` lists each with its reason, and the test fails when the list and the
documents disagree. They are synopsis lines with placeholders (``ocisquash IN OUT [options]``,
``ocisquash images PATH``, ``completion bash|zsh|fish``); ``make demo`` and ``make test`` (they
install and run everything: ``test_make_demo_installs_nothing_outside_the_venv`` checks what ``make -n
demo`` would run instead); ``ocisquash images /tmp/ocisquash-demo.tar`` (lists what ``make demo``
wrote); ``ocisquash.open("-")`` (reads standard input, in a sentence on what an ``Image`` reads).
bench/README.md's commands run the benchmark (minutes, the whole machine) and are not examples of
ocisquash's interface: they are not run here.
Normalised in compared output: relative times ("3 years ago"), docker's
local-time stamps, durations ("0.02s") and runs of spaces (they change with the clock, not the code).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fixtures import build_oci, sample_layers
from registryd import Registry
from registryd import problem as registry_problem

ROOT = Path(__file__).resolve().parent.parent
DOCS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
AGO = re.compile(r"(\d+ (years|months|weeks|days|hours|minutes|seconds)|About an? \w+|Less than a second) ago")
STAMP = re.compile(r'"CreatedAt":"[^"]*"')
SECONDS = re.compile(r"\b\d+\.\d+s\b")
TMP = re.compile(r"(?<![\w./])/tmp/")
COMMENT = re.compile(r"\s+#\s.*$")
ASSIGN = re.compile(r"^[A-Z_][A-Z0-9_]*=\S*$")
PLACEHOLDER = re.compile(r"^(\[.*|[A-Z][A-Z_]+|\w+(\|\w+)+)$")  # IN, OUT, [options], a|b: a synopsis
RUNNABLE = {"ocisquash", "docker", "podman", "skopeo", "source"}
SAMPLE = ROOT / "testdata" / "sample.docker.tar"
# Examples not run, each with its reason (the test fails if this list and the documents disagree).
NOT_RUN = {
    **dict.fromkeys(["ocisquash IN OUT [options]", "ocisquash IN OUT", "ocisquash squash IN OUT",
                     "ocisquash images PATH", "ocisquash history IMAGE", "ocisquash analyze IMAGE",
                     "ocisquash validate PATH", "ocisquash completion bash|zsh|fish"],
                    "a synopsis: placeholders, not an example"),
    "make demo": "installs a venv and runs the demo: test_make_demo_installs_nothing_outside_the_venv reads it",
    "make test": "runs every test, this one included",
    "ocisquash images /tmp/ocisquash-demo.tar": "lists what `make demo` wrote",
    'ocisquash.open("-")': "reads standard input; the sentence says what an Image from it reads",
    **dict.fromkeys(['podman run --rm -v "$PWD:/data" localhost/ocisquash /data/app.tar /data/app-squashed.tar',
                     'docker run --rm -u "$(id -u):$(id -g)" -v "$PWD:/data" localhost/ocisquash /data/app.tar '
                     '/data/app-squashed.tar'],
                    "runs the image `make image` builds; tests/test_container_image.py runs the podman line"),
}


@dataclass(frozen=True)
class Example:
    cmd: str
    expected: str | None  # the shown output of a transcript line; None for a script line
    python: bool = False


@dataclass(frozen=True)
class Block:
    where: str  # "README.md:123" or "ocisquash history --help"
    examples: tuple[Example, ...]


def _fences(text: str) -> Iterator[tuple[int, str, str]]:
    """(line number, info string, body) of every fenced block; a fence indented in a list is dedented."""
    lang: str | None = None
    start, indent, body = 0, 0, []
    for n, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            if lang is None:
                lang, start, indent, body = line.strip()[3:].strip(), n, len(line) - len(line.lstrip()), []
            else:
                yield start, lang, "\n".join(body) + "\n"
                lang = None
        elif lang is not None:
            body.append(line[indent:] if line[:indent].isspace() else line)
    assert lang is None, "an unclosed fence"


def _command(line: str) -> str | None:
    """The command of a script line (its comment cut off), or None for a synopsis or a make line."""
    cmd = COMMENT.sub("", line.strip())
    words = [w for w in shlex.split(cmd) if not ASSIGN.match(w)]
    if cmd in NOT_RUN or any(PLACEHOLDER.match(w) for w in words[1:]):
        NOT_RUN_SEEN.add(cmd)
        return None
    assert words and words[0] in RUNNABLE, f"an example this test cannot run: {line!r}"
    return cmd


NOT_RUN_SEEN: set[str] = set()


def _script(where: str, lines: list[str]) -> Block | None:
    cmds = [c for ln in lines if ln.strip() for c in [_command(ln)] if c is not None]
    return Block(where, tuple(Example(c, None) for c in cmds)) if cmds else None


def _inline(text: str) -> Iterator[tuple[int, str]]:
    """(line number, code) of every inline code span outside fenced blocks (a span may wrap a line)."""
    fenced = False
    prose = []
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            prose.append("")
        else:
            prose.append("" if fenced else line)
    joined = "\n".join(prose)
    for m in re.finditer(r"`([^`]+)`", joined):
        if "\n\n" not in m.group(1):
            yield joined.count("\n", 0, m.start()) + 1, re.sub(r"\s*\n\s*", " ", m.group(1))


def _inline_python(code: str) -> bool:
    """A span of Python to run: a complete statement using ``ocisquash`` and the names it binds only."""
    if not code.startswith(("ocisquash.", "with ocisquash.")):
        return False
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return False  # a fragment (`with ...:`) or a signature with `*` and `…`
    bound = {"ocisquash"} | {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    calls = any(isinstance(n, ast.Call) for n in ast.walk(tree))  # `ocisquash.limits` alone names a module
    return calls and all(n.id in bound for n in ast.walk(tree) if isinstance(n, ast.Name))


def inline_blocks(doc: str) -> list[Block]:
    """Inline spans that are whole examples: ``ocisquash ARGS…``, a pipe into ocisquash, ``source <(…)``,
    and Python statements (``_inline_python``); a bare command name (``ocisquash images``) is prose."""
    blocks = []
    for n, code in _inline((ROOT / doc).read_text()):
        where = f"{doc}:{n}"
        if code in NOT_RUN:
            NOT_RUN_SEEN.add(code)
        elif _inline_python(code):
            blocks.append(Block(where, (Example(f"import ocisquash\n{code}\n", None, python=True),)))
        elif (code.startswith("ocisquash ") and len(code.split()) > 2) or " | ocisquash " in code or \
                code.startswith("source <("):
            block = _script(where, [code])
            if block:
                blocks.append(block)
    return blocks


def doc_blocks(doc: str) -> list[Block]:
    blocks = []
    for n, lang, body in _fences((ROOT / doc).read_text()):
        where = f"{doc}:{n}"
        if lang == "python":
            blocks.append(Block(where, (Example(body, None, python=True),)))
        elif re.search(r"^\$ ", body, flags=re.M):
            found = []
            for part in re.split(r"^\$ ", body, flags=re.M)[1:]:
                cmd, _, expected = part.partition("\n")
                words = [w for w in shlex.split(cmd) if not ASSIGN.match(w)]
                assert words[0] == "ocisquash", f"{where}: a transcript of something else: {cmd!r}"
                found.append(Example(cmd, expected))
            blocks.append(Block(where, tuple(found)))
        elif lang in ("", "sh", "bash", "console"):
            block = _script(where, body.splitlines())
            if block:
                blocks.append(block)
        else:
            assert not re.search(r"^\s*ocisquash ", body, flags=re.M), f"{where}: commands in a ``` {lang} block"
    return blocks


def help_texts() -> dict[str, str]:
    """Each command's --help text (and the top-level one), by the command that shows it."""
    from ocisquash.cli import app

    texts = {"ocisquash --help": app.info.help or ""}
    for c in app.registered_commands:
        name = c.name or (c.callback.__name__ if c.callback else "")
        texts[f"ocisquash {name} --help"] = c.help or ""
    return texts


def _examples_section(text: str) -> str:
    return text.split("Examples:", 1)[1].split("\n\nExit status", 1)[0] if "Examples:" in text else ""


def help_blocks() -> list[Block]:
    blocks, seen = [], set()
    for where, text in help_texts().items():
        section = _examples_section(text)
        if section in seen:  # an alias (ls) shows its command's examples
            continue
        seen.add(section)
        block = _script(where, section.splitlines())
        if block:
            blocks.append(block)
    return blocks


BLOCKS = [b for d in DOCS for b in doc_blocks(d) + inline_blocks(d)] + help_blocks()


# ------------------------------------------------------------------------------------------ the workspace

DOCKER_SHIM = '''#!{python}
"""docker for the docs' examples: save NAMES prints a tarball of them; load checks the tarball it is given."""
import json, pathlib, subprocess, sys, tempfile
ws = pathlib.Path(__file__).resolve().parent.parent
args = sys.argv[1:]
saved = json.loads((ws / "saved" / "names.json").read_text())
if args and args[0] == "save":
    key = " ".join(args[1:])
    if key not in saved:
        sys.exit(f"{{pathlib.Path(sys.argv[0]).name}} (stand-in): no saved image for {{key!r}}")
    sys.stdout.buffer.write((ws / "saved" / saved[key]).read_bytes())
elif args[:1] == ["load"]:
    path = args[2] if args[1:2] == ["-i"] else None
    if path is None:
        with tempfile.NamedTemporaryFile(dir=ws, delete=False, suffix=".tar") as f:
            f.write(sys.stdin.buffer.read())
            path = f.name
    subprocess.run(["ocisquash", "validate", "-q", path], check=True)
    names = subprocess.run(["ocisquash", "images", path, "--format", "{{{{.Repository}}}}:{{{{.Tag}}}}"],
                           check=True, capture_output=True, text=True).stdout.split()
    print("".join(f"Loaded image: {{n}}\\n" for n in names), end="")
else:
    sys.exit(f"stand-in: {{args}} is not a command the examples use")
'''


def cli(*args: str | Path, cwd: Path | None = None) -> None:
    subprocess.run([sys.executable, "-m", "ocisquash", *map(str, args)], check=True, cwd=cwd,
                   capture_output=True, env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"})


def tar_dir(src: Path, out: Path) -> None:
    """An OCI layout tar of the layout directory ``src`` (what ``tar -C src -cf out .`` makes)."""
    with tarfile.open(out, "w") as t:
        for p in sorted(src.rglob("*")):
            t.add(p, arcname=str(p.relative_to(src)), recursive=False)


def _blob(layout: Path, obj: object) -> dict[str, object]:
    data = json.dumps(obj, separators=(",", ":")).encode()
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _multi_platform(layout: Path) -> None:
    """Turn the layout's one entry (app:1.0) into an index: linux/amd64 and linux/arm64 images; add an
    untagged image of the top layer alone (dangling)."""
    index = json.loads((layout / "index.json").read_text())
    (entry,) = index["manifests"]
    blobs = layout / "blobs" / "sha256"
    manifest = json.loads((blobs / entry["digest"].split(":")[1]).read_text())
    config = json.loads((blobs / manifest["config"]["digest"].split(":")[1]).read_text())
    arm_config = {**config, "architecture": "arm64", "variant": "v8"}
    arm = {**manifest, "config": {**manifest["config"], **_blob(layout, arm_config)}}
    mt = manifest.get("mediaType", "application/vnd.oci.image.manifest.v1+json")
    amd_desc = {"mediaType": mt, "digest": entry["digest"], "size": entry["size"],
                "platform": {"os": "linux", "architecture": config.get("architecture", "amd64")}}
    arm_desc = {"mediaType": mt, **_blob(layout, arm), "platform": {"os": "linux", "architecture": "arm64",
                                                                     "variant": "v8"}}
    nested = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
              "manifests": [amd_desc, arm_desc]}
    top = {**config, "rootfs": {"type": "layers", "diff_ids": config["rootfs"]["diff_ids"][-1:]},
           "history": [h for h in config.get("history", []) if not h.get("empty_layer")][-1:]}
    dangling = {**manifest, "config": {**manifest["config"], **_blob(layout, top)}, "layers": manifest["layers"][-1:]}
    index["manifests"] = [
        {"mediaType": "application/vnd.oci.image.index.v1+json", **_blob(layout, nested),
         "annotations": entry.get("annotations", {})},
        {"mediaType": mt, **_blob(layout, dangling)},
    ]
    (layout / "index.json").write_text(json.dumps(index))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, require_tools: None) -> Path:
    """The inputs every example names (see the module docstring), built once."""
    ws = tmp_path_factory.mktemp("docs-examples") / "ws"
    src = ws.parent / "src"
    for d in ("tmp", "home/.zfunc", "home/.config/fish/completions", "bin", "saved"):
        (ws / d).mkdir(parents=True)
    (ws / "testdata").symlink_to(ROOT / "testdata")
    base = build_oci(src / "base", "base", sample_layers()[:1], history=["base files"]).path
    web = build_oci(src / "web", "web", sample_layers()[:1], {"Labels": {"tier": "web"}}, history=["base files"]).path
    cli("convert", SAMPLE, ws / "app.tar", "--tag", "app:1.0")
    shutil.copy(ws / "app.tar", ws / "in.tar")
    cli("convert", base, ws / "debian.tar", "--image", "base", "--tag", "debian:bookworm", "--tag", "debian:12")
    cli("convert", ws / "app.tar", "oci-archive:" + str(ws / "app.oci.tar") + ":app:1.0")
    cli("convert", ws / "app.tar", ws / "layout", "--tag", "app:1.0")
    _multi_platform(ws / "layout")
    shutil.copytree(ws / "layout", ws / "multi")
    cli("convert", ws / "app.tar", src / "all", "--tag", "acme/app:1")
    cli("convert", web, src / "all", "--image", "web", "--tag", "acme/web:1")
    tar_dir(src / "all", ws / "all.tar")
    # what `docker save NAMES` / `podman save ...` print: one tarball per list of names
    cli("convert", ws / "app.tar", ws / "saved" / "app.tar", "--tag", "app:latest")
    cli("convert", ws / "app.tar", src / "app-base", "--tag", "app:latest")
    cli("convert", base, src / "app-base", "--image", "base", "--tag", "base:latest")
    tar_dir(src / "app-base", ws / "saved" / "app-base.tar")
    cli("convert", ws / "app.tar", ws / "saved" / "app.oci.tar", "--format", "oci-archive", "--tag", "app:latest")
    shutil.copy(ws / "app.tar", ws / "saved" / "app-1.0.tar")
    names = {"app:1.0": "app-1.0.tar", "app": "app.tar", "app base": "app-base.tar",
             "--format oci-archive app": "app.oci.tar"}
    (ws / "saved" / "names.json").write_text(json.dumps(names))
    for tool in ("docker", "podman"):
        (ws / "bin" / tool).write_text(DOCKER_SHIM.format(python=sys.executable))
        (ws / "bin" / tool).chmod(0o755)
    return ws


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, workspace: Path) -> Iterator[Registry]:
    """A registry on 127.0.0.1 holding app:1 and base:12 (what the registry examples read)."""
    why = registry_problem()
    if why is not None:
        from conftest import skip_or_fail

        skip_or_fail(f"registry: {why}")
    with Registry(tmp_path_factory.mktemp("docs-registry")) as reg:
        cli("convert", workspace / "app.tar", f"docker://{reg.host}/app:1", "--tls-verify=false")
        cli("convert", workspace / "debian.tar", f"docker://{reg.host}/base:12", "--image", "debian:12",
            "--tls-verify=false")
        yield reg


# ------------------------------------------------------------------------------------------ the checks

def norm(text: str) -> str:
    text = SECONDS.sub("<secs>", STAMP.sub('"CreatedAt":"<time>"', AGO.sub("<ago>", text)))
    return "\n".join(re.sub(r" {2,}", "  ", ln.rstrip()) for ln in text.strip("\n").splitlines())


def _env(ws: Path) -> dict[str, str]:
    env = {**os.environ, "HOME": str(ws / "home"),
           "PATH": os.pathsep.join([str(ws / "bin"), str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    env.pop("DOCKER_DEFAULT_PLATFORM", None)
    env.update(PUB="reader:pub-secret", PRIV="pusher:priv-secret")  # the two-registry example's credentials
    return env


def _run(argv: list[str], ws: Path) -> subprocess.CompletedProcess[str]:
    """Run an example in the workspace (a tarball on stdout is shown as text with replacements)."""
    return subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=300, cwd=ws, env=_env(ws))


def _registry_form(cmd: str, host: str) -> str:
    """reg.example (and the two-registry example's pub.example and priv.example) -> the test registry;
    plain HTTP needs --tls-verify=false (after the command's own words, before a comment or a pipe)."""
    for name in ("reg.example", "pub.example", "priv.example"):
        cmd = cmd.replace(name, host)
    return cmd + " --tls-verify=false"


def _bad_lines(out: str) -> list[str]:
    return [ln for ln in out.splitlines() if ln.strip() == "null"]


def run_script_line(ws: Path, cmd: str, host: str | None) -> None:
    line = TMP.sub("tmp/", cmd).replace("~/", "$HOME/")
    if "docker://" in line:
        assert host is not None
        line = _registry_form(line, host)
    if line.startswith("source "):
        line += " && complete -p ocisquash"
    p = _run(["bash", "-o", "pipefail", "-c", line], ws)
    out = p.stdout + p.stderr
    ci_verdict = "--ci" in line and p.returncode == 1 and all(ln.startswith("fail: ") for ln in p.stderr.splitlines())
    assert p.returncode == 0 or ci_verdict, f"{cmd}\nexit {p.returncode}\n{out}"
    redirected = re.search(r"(?<![0-9&])>\s*\S", line) is not None
    assert redirected or out.strip(), f"{cmd}: printed nothing"
    assert not _bad_lines(p.stdout), f"{cmd}: printed {_bad_lines(p.stdout)} (a key the JSON does not have?)"


def run_transcript_line(ws: Path, ex: Example) -> None:
    assert ex.expected is not None
    p = _run(["bash", "-c", TMP.sub("tmp/", ex.cmd)], ws)
    assert norm(p.stdout + p.stderr) == norm(TMP.sub("tmp/", ex.expected)), ex.cmd


def run_python(ws: Path, code: str) -> None:
    p = _run([sys.executable, "-c", code], ws)
    assert p.returncode == 0, f"{code}\n{p.stdout}{p.stderr}"


def test_every_document_and_help_text_has_its_examples_found() -> None:
    wheres = {b.where.split(":")[0] for b in BLOCKS}
    assert {"README.md", "docs/commands.md", "docs/api.md"} <= wheres
    run = {ex.cmd for b in BLOCKS for ex in b.examples}
    helps = [(w, _examples_section(t)) for w, t in help_texts().items() if "Examples:" in t]
    assert len(helps) >= 9
    for where, section in helps:
        block = _script(where, section.splitlines())
        assert block is not None and {ex.cmd for ex in block.examples} <= run, where
    assert set(NOT_RUN) == NOT_RUN_SEEN, "the list of examples not run is out of date"
    assert sum(len(b.examples) for b in BLOCKS) >= 60


@pytest.mark.parametrize("block", BLOCKS, ids=[b.where for b in BLOCKS])
def test_example_does_what_the_docs_say(block: Block, workspace: Path, tmp_path: Path,
                                        request: pytest.FixtureRequest) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(workspace, ws, symlinks=True)
    host = None
    if any("docker://" in ex.cmd for ex in block.examples):
        host = request.getfixturevalue("registry").host
    for ex in block.examples:
        if ex.python:
            run_python(ws, ex.cmd)
        elif ex.expected is not None:
            run_transcript_line(ws, ex)
        else:
            run_script_line(ws, ex.cmd, host)


def test_a_json_key_the_output_lacks_fails_the_check(workspace: Path, tmp_path: Path) -> None:
    """The old `history --help` example printed null for each row: the check above must refuse that."""
    ws = tmp_path / "ws"
    shutil.copytree(workspace, ws, symlinks=True)
    with pytest.raises(AssertionError, match="null"):
        run_script_line(ws, "ocisquash history app.tar --format json | jq -r .created_by", None)
    with pytest.raises(AssertionError, match="exit"):
        run_script_line(ws, "ocisquash history nothing.tar --format json | jq -r .CreatedBy", None)
    run_script_line(ws, "ocisquash history app.tar --format json | jq -r .CreatedBy", None)


def test_make_demo_installs_nothing_outside_the_venv(tmp_path: Path) -> None:
    """README's Quick start: `make demo` sets up the venv and runs ocisquash; only `make test` runs apt-get."""
    venv = tmp_path / "venv"
    # run as a top-level make even under `make test`: a sub-make prints "make[1]: Entering directory"
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    demo = subprocess.run(["make", "--no-print-directory", "-n", "demo", f"VENV={venv}"], capture_output=True,
                          text=True, cwd=ROOT, check=True, env=env).stdout
    for line in demo.splitlines():
        assert "apt-get" not in line and "sudo" not in line, line
        words = shlex.split(line)
        assert words[0] in ("python3", str(venv / "bin" / "python"), str(venv / "bin" / "ocisquash"), "touch"), line
        if words[0] == "touch":
            assert words[1].startswith(str(venv)), line
    assert f"{venv}/bin/ocisquash testdata/sample.docker.tar /tmp/ocisquash-demo.tar" in demo
    test = subprocess.run(["make", "--no-print-directory", "-n", "test", f"VENV={venv}"], capture_output=True,
                          text=True, cwd=ROOT, check=True, env=env).stdout
    assert "apt-get install" in test and "pytest" in test
