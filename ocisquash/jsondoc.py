"""JSON documents read strictly and written canonically: one decoder for every document an input holds.

A document is refused, with its file named, for a duplicate key at any depth (two parsers of one
manifest must not see two different documents), a NaN or Infinity, nesting past ``MAX_DEPTH``, a lone
surrogate, or a size past the cap; ``canonical_json`` serialises a new document once, deterministically.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ocisquash import limits
from ocisquash.errors import FormatError


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Each JSON object: built in C, then one length comparison refuses a repeated key at any depth."""
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _DuplicateKey(_first_duplicate(pairs))
    return out


def _first_duplicate(pairs: list[tuple[str, Any]]) -> str:
    seen: set[str] = set()
    for k, _v in pairs:
        if k in seen:
            return k
        seen.add(k)
    raise AssertionError("no duplicate key")  # pragma: no cover - called only when there is one


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# One decoder for every document: ``json.loads`` with hooks builds a new decoder and scanner per call,
# which cost as much as decoding a small document.
_DECODER = json.JSONDecoder(object_pairs_hook=_reject_duplicates, parse_constant=_no_constants)

MAX_DEPTH = 64  # nesting of JSON containers: real documents nest 5 deep; Python's own recursion stops near 1000
INT64_MAX = (1 << 63) - 1
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def load_json(data: bytes, where: str, *, max_size: int | None = None) -> Any:
    """Parse I-JSON strictly: UTF-8, no duplicate keys, no NaN, no lone surrogates, nested at most
    ``MAX_DEPTH`` deep, capped in size (``max_json`` by default) and in values (``max_json_values``)."""
    lim = limits.current()
    if max_size is None:
        max_size = lim.max_json
    if len(data) > max_size:
        raise limits.exceeded("max_json", f"{where}: JSON document is {len(data)} bytes, over the cap of {max_size}")
    # An upper bound on the values in the document, counted in C before anything is parsed: parsed, each
    # small value costs 50-250 bytes, so this bounds memory where the size cap alone does not.
    containers = data.count(b"{") + data.count(b"[")
    values = containers + data.count(b",") + data.count(b":") + 1
    if values > lim.max_json_values:
        raise limits.exceeded("max_json_values", f"{where}: JSON document holds up to {values} values, over the "
                                                 f"cap of {lim.max_json_values}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FormatError(f"{where}: not UTF-8 JSON ({e.reason} at byte {e.start})") from None
    try:
        if text.startswith("\ufeff"):  # as json.loads says it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        obj = _DECODER.decode(text)
    except _DuplicateKey as e:
        raise FormatError(f"{where}: duplicate JSON key {e.key!r}") from None
    except RecursionError:
        raise FormatError(f"{where}: JSON nested too deeply") from None
    except ValueError as e:
        raise FormatError(f"{where}: malformed JSON ({e})") from None
    surrogates = _SURROGATE_ESCAPE.search(data) is not None
    if containers > MAX_DEPTH or surrogates:
        _check_values(obj, where, surrogates)
    return obj


def _check_values(obj: Any, where: str, surrogates: bool) -> None:
    """Refuse nesting deeper than ``MAX_DEPTH`` (deeper documents crash writers and printers later) and,
    when the text escapes one, lone surrogates (I-JSON forbids them; no UTF-8 encoder takes them)."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, dict):
            if depth > MAX_DEPTH:
                raise FormatError(f"{where}: JSON nested deeper than {MAX_DEPTH} levels")
            for k, x in v.items():
                if surrogates:
                    _check_text(k, where)
                if isinstance(x, (dict, list)) or (surrogates and isinstance(x, str)):
                    stack.append((x, depth + 1))
        elif isinstance(v, list):
            if depth > MAX_DEPTH:
                raise FormatError(f"{where}: JSON nested deeper than {MAX_DEPTH} levels")
            stack.extend((x, depth + 1) for x in v
                         if isinstance(x, (dict, list)) or (surrogates and isinstance(x, str)))
        elif isinstance(v, str):
            _check_text(v, where)


def _check_text(s: str, where: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as e:
        raise FormatError(f"{where}: a JSON string holds a lone surrogate (\\u{ord(s[e.start]):04x}), which "
                          "is not text") from None


def canonical_json(obj: Any) -> bytes:
    """Serialise a new document once, deterministically (no whitespace, insertion key order)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
