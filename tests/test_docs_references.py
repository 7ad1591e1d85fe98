"""The code cites only documents in the repository, and docs/design.md's module map is the package's.

A citation is ``docs/NAME.md`` in a comment or docstring of ocisquash/ or tests/, optionally followed by
sections (``§4.5``, ``§4.4 and §4.5``) and a numbered item of that section (``§4.5 step 8``,
``§2.4 rule 4``), or an anchor (``docs/formats.md#7-untrusted-tarballs``). Each must name an existing
file, an existing numbered heading (``## 4. Layers``, ``### 4.5 Applying a layer``) or GitHub anchor,
and an existing numbered item under that heading. The project's old reference, a file outside the
repository, is cited nowhere.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SECTION = r"§\d+(?:\.\d+)*(?: (?:step|rule) \d+)?"
CITE = re.compile(rf"(docs/[\w-]+\.md)(#[\w-]+|(?:(?:\s+|\s*,\s*|\s+and\s+|\s*[–-]\s*){SECTION})*)")
ONE = re.compile(r"§(\d+(?:\.\d+)*)(?: (?:step|rule) (\d+))?")
HEADING = re.compile(r"^(#{2,6}) +(.*?)\s*$")
OLD = re.compile("FORMATS" + r"(?:\.md)?\s*§|" + "FORMATS" + r"\.md")  # split: this file cites nothing


def sources() -> list[Path]:
    return sorted(p for d in ("ocisquash", "tests", "bench") for p in (ROOT / d).rglob("*.py"))


def citations() -> list[tuple[str, str, str]]:
    """(where, document, what follows its name) of every citation in the code and tests."""
    out = []
    for path in sources():
        if path == Path(__file__).resolve():
            continue  # its docstring and checks show citations; they cite nothing
        for n, line in enumerate(path.read_text().splitlines(), 1):
            for m in CITE.finditer(line):
                out.append((f"{path.relative_to(ROOT)}:{n}", m.group(1), m.group(2)))
    return out


def sections(doc: Path) -> dict[str, tuple[str, list[str]]]:
    """Numbered headings of ``doc``: number -> (its GitHub anchor, the lines of its section)."""
    out: dict[str, tuple[str, list[str]]] = {}
    current: list[str] | None = None
    for line in doc.read_text().splitlines():
        m = HEADING.match(line)
        if m:
            num = re.match(r"(\d+(?:\.\d+)*)\.? ", m.group(2))
            current = [] if num else None
            if num:
                out[num.group(1)] = (anchor(m.group(2)), current)
        elif current is not None:
            current.append(line)
    return out


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return "#" + re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    return {anchor(m.group(2)) for line in doc.read_text().splitlines() if (m := HEADING.match(line))}


CITATIONS = citations()


def test_the_code_cites_its_own_documents() -> None:
    docs = {d for _, d, _ in CITATIONS}
    assert "docs/formats.md" in docs and len(CITATIONS) >= 10


@pytest.mark.parametrize(("where", "doc", "tail"), CITATIONS, ids=[w for w, _, _ in CITATIONS])
def test_citation_names_an_existing_file_and_heading(where: str, doc: str, tail: str) -> None:
    path = ROOT / doc
    assert path.is_file(), f"{where}: {doc} is not in the repository"
    if tail.startswith("#"):
        assert tail in anchors(path), f"{where}: {doc} has no heading {tail}"
        return
    secs = sections(path)
    for m in ONE.finditer(tail):
        number, item = m.group(1), m.group(2)
        assert number in secs, f"{where}: {doc} has no section {number}"
        if item is not None:
            items = {re.match(r"\s*(\d+)\. ", ln).group(1) for ln in secs[number][1]  # type: ignore[union-attr]
                     if re.match(r"\s*\d+\. ", ln)}
            assert item in items, f"{where}: {doc} §{number} has no item {item}"


def test_nothing_cites_the_old_reference_outside_the_repository() -> None:
    here = Path(__file__).resolve()
    found = [f"{p.relative_to(ROOT)}:{n}" for p in sources() if p != here
             for n, line in enumerate(p.read_text().splitlines(), 1) if OLD.search(line)]
    found += [f"{p.relative_to(ROOT)}:{n}" for p in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
              for n, line in enumerate(p.read_text().splitlines(), 1) if OLD.search(line)]
    assert not found


def test_the_checks_above_catch_a_bad_citation(tmp_path: Path) -> None:
    """A section, an item or an anchor that does not exist is found (so the checks can fail)."""
    secs = sections(ROOT / "docs" / "formats.md")
    assert "4.5" in secs and "99" not in secs
    step_lines = [ln for ln in secs["4.5"][1] if re.match(r"\d+\. ", ln)]
    assert len(step_lines) == 8  # steps 1-8 of applying a layer, which the tests cite by number
    assert "#7-untrusted-tarballs" in anchors(ROOT / "docs" / "formats.md")
    assert [m.group(2) for m in CITE.finditer("see docs/formats.md §4.4 and §4.5 step 8)")] == [" §4.4 and §4.5 step 8"]
    assert OLD.search("FORMATS" + ".md §3") and not OLD.search("FORMATS = (1, 2)")


def _module_names() -> set[str]:
    names = set()
    for p in (ROOT / "ocisquash").rglob("*.py"):
        rel = p.relative_to(ROOT / "ocisquash").with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        if parts:
            names.add(".".join(parts))
    return names


def _design_modules() -> set[str]:
    """The module names in the first column of the tables of design.md's module map."""
    text = (ROOT / "docs" / "design.md").read_text()
    section = text.split("## Modules, bottom up", 1)[1].split("\n## ", 1)[0]
    names = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([\w.]+)`", line.split("|")[1]))
    return names


def test_design_md_names_every_module_and_only_modules() -> None:
    modules, named = _module_names(), _design_modules()
    assert modules - {"__main__"} <= named, f"modules missing from docs/design.md: {modules - named - {'__main__'}}"
    assert named <= modules, f"docs/design.md names modules that do not exist: {named - modules}"
