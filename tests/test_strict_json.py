"""``model.load_json``'s duplicate-key check against a slow model of it: a key-by-key walk of every object.

The loader builds each object in C and compares its length with its pairs' count; the model below is the
check it replaced. Both must refuse the same documents, naming the same key, at any depth.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocisquash import errors, model

KEYS = st.sampled_from(["a", "b", "ü", "a\\u0062", "\\u0061", ""])  # escapes spell other keys' names
"""Few keys, so that objects repeat one often; raw JSON text, so that "\\u0061" and "a" are one key."""


class _Dup(Exception):
    pass


def _slow_check(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _Dup(k)
        out[k] = v
    return out


def _doc(depth: int = 3) -> st.SearchStrategy[str]:
    leaf = st.sampled_from(["1", "-2.5", "true", "null", '"x"', '"\\u00fc"', "[]", "{}"])
    if depth == 0:
        return leaf
    inner = _doc(depth - 1)
    objects = st.lists(st.tuples(KEYS, inner), max_size=5).map(
        lambda kv: "{" + ",".join(f'"{k}":{v}' for k, v in kv) + "}")
    arrays = st.lists(inner, max_size=4).map(lambda xs: "[" + ",".join(xs) + "]")
    return st.one_of(leaf, objects, arrays)


@settings(max_examples=400, deadline=None)
@given(_doc())
def test_duplicate_keys_refused_exactly_as_the_slow_check_does(text: str) -> None:
    try:
        want: Any = json.loads(text, object_pairs_hook=_slow_check)
        dup = None
    except _Dup as e:
        dup = e.args[0]
    if dup is None:
        assert model.load_json(text.encode(), "doc.json") == want
    else:
        with pytest.raises(errors.FormatError, ) as ei:
            model.load_json(text.encode(), "doc.json")
        assert str(ei.value) == f"doc.json: duplicate JSON key {dup!r}"


@pytest.mark.parametrize("text,key", [
    ('{"a":1,"b":2,"a":3}', "a"),
    ('{"a":1,"\\u0061":2}', "a"),  # the same key, spelt two ways
    ('[1,{"x":[{"k":{"k":1,"z":2,"z":3}}]}]', "z"),  # deep inside, beside a legal repeat one level up
    ('{"a":{"b":1},"a":{"b":1}}', "a"),  # equal values are still a duplicate
])
def test_duplicate_key_named(text: str, key: str) -> None:
    with pytest.raises(errors.FormatError) as ei:
        model.load_json(text.encode(), "doc.json")
    assert str(ei.value) == f"doc.json: duplicate JSON key {key!r}"


def test_byte_order_mark_refused_as_json_loads_does() -> None:
    with pytest.raises(errors.FormatError, match=r"malformed JSON .*BOM"):
        model.load_json(b'\xef\xbb\xbf{"a":1}', "doc.json")
