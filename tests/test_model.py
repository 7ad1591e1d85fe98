"""The image model: digest grammar, chain IDs (docs/formats.md §5 test values), strict JSON, schema 1 rejection,
null-tolerant optional fields, and byte-exact pass-through of documents nobody changed."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_badinput import HandImage, index_of, jbytes, layout_files, sha, write_dir, write_tar

from ocisquash import errors, model
from ocisquash.convert import convert
from ocisquash.digest import EMPTY_TAR_DIFF_ID, Digest, chain_ids
from ocisquash.sources import open_source

E = EMPTY_TAR_DIFF_ID


# ------------------------------------------------------------------------------------------ digests

@pytest.mark.parametrize("text", [
    "sha256:" + "a" * 64, "sha512:" + "0" * 128, "blake3:" + "f" * 64,
    "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8",
    "sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564",
    "a.b_c-d:x=",
])
def test_digest_grammar_accepts(text: str) -> None:
    d = Digest.parse(text)
    assert str(d) == text


@pytest.mark.parametrize("text", [
    "sha256:" + "A" * 64,  # upper case is forbidden for sha256
    "sha256:" + "a" * 63, "sha256:" + "a" * 65, "sha512:" + "a" * 64,
    "sha256:../../etc/passwd", "sha256:", ":abc", "sha256", "SHA256:" + "a" * 64, "sha256:" + "a" * 64 + "\n",
    "sha256:" + "a" * 63 + "/", "sha256::" + "a" * 64, "a..b:x", "-a:x", "a+:x", 7, None,
])
def test_digest_grammar_rejects(text: object) -> None:
    with pytest.raises(errors.FormatError):
        Digest.parse(text, where="test")


def test_unknown_algorithm_cannot_be_verified_or_pathed() -> None:
    from ocisquash.formats.ocilayout import blob_path

    d = Digest.parse("blake3:" + "f" * 64)
    assert not d.verifiable
    with pytest.raises(errors.FormatError):
        d.hasher()
    with pytest.raises(errors.FormatError):
        blob_path(d)
    assert blob_path(Digest.parse("sha256:" + "b" * 64)) == "blobs/sha256/" + "b" * 64


def test_chain_id_vectors() -> None:
    """The three test values of docs/formats.md §5, computed independently of the implementation."""
    a = Digest.parse("sha256:ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb")
    assert str(a) == "sha256:" + hashlib.sha256(b"a").hexdigest()
    e = Digest.parse(E)
    assert chain_ids([]) == []
    assert chain_ids([e]) == [e]
    assert str(chain_ids([e, e])[-1]) == "sha256:170b376f64fb30995c140276be3d71dfb256b308d86183ca3b22aa93a79ad548"
    assert str(chain_ids([e, e, e])[-1]) == "sha256:7800f80a93336d416612f372faa5f69eb67b353ce6ae9535fa0848f8784c74b1"
    assert str(chain_ids([a, e])[-1]) == "sha256:ce86e93ec95ec78e6e7bc6891006dea061467923d8c702ae35c9bd50ea071081"
    assert hashlib.sha256(b"\0" * 1024).hexdigest() == E.split(":")[1]


# ------------------------------------------------------------------------------------------ strict JSON

@pytest.mark.parametrize("data,word", [
    (b'{"a":1,"a":2}', "duplicate"), (b'{"x":{"b":1,"b":1}}', "duplicate"), (b'[{"k":1,"k":1}]', "duplicate"),
    (b'{"a":NaN}', "malformed"), (b'{"a":Infinity}', "malformed"), (b'{"a":', "malformed"),
    (b'{"a":"\xff"}', "utf-8"), (b"", "malformed"), (b'{"a":1} x', "malformed"),
])
def test_strict_json_rejects(data: bytes, word: str) -> None:
    with pytest.raises(errors.FormatError) as ei:
        model.load_json(data, "doc.json")
    assert str(ei.value).startswith("doc.json: ")
    assert word in str(ei.value).lower()


def test_json_size_cap_and_depth() -> None:
    with pytest.raises(errors.LimitExceeded):
        model.load_json(b'{"a":"' + b"x" * 100 + b'"}', "doc.json", max_size=50)
    with pytest.raises(errors.FormatError):
        model.load_json(b"[" * 100_000 + b"]" * 100_000, "deep.json")
    assert model.load_json('{"ü":"ß"}'.encode(), "ok.json") == {"ü": "ß"}


def test_canonical_json() -> None:
    assert model.canonical_json({"b": 1, "a": ["ü", None]}) == '{"b":1,"a":["ü",null]}'.encode()


# ------------------------------------------------------------------------------------------ documents

def _manifest(**extra: object) -> dict[str, object]:
    return {"schemaVersion": 2, "mediaType": model.OCI_MANIFEST,
            "config": {"mediaType": model.OCI_CONFIG, "digest": "sha256:" + "c" * 64, "size": 10},
            "layers": [{"mediaType": model.OCI_LAYER, "digest": "sha256:" + "d" * 64, "size": 20}], **extra}


@pytest.mark.parametrize("doc", [
    {"schemaVersion": 1, "name": "a", "tag": "b", "fsLayers": []},
    {"schemaVersion": 2, "mediaType": model.SCHEMA1[0], "config": {}, "layers": []},
    {"schemaVersion": 1, "mediaType": model.SCHEMA1[1], "signatures": []},
])
def test_schema1_rejected(doc: dict[str, object]) -> None:
    with pytest.raises(errors.FormatError) as ei:
        model.Manifest.parse(jbytes(doc), "m.json")
    assert "schema 1" in str(ei.value)


def test_schema_version_must_be_2() -> None:
    with pytest.raises(errors.FormatError, match="schemaVersion"):
        model.Manifest.parse(jbytes(_manifest(schemaVersion=3)), "m.json")
    with pytest.raises(errors.FormatError, match="schemaVersion"):
        model.Index.parse(jbytes({"manifests": []}), "i.json")


def test_manifest_fields_checked() -> None:
    m = model.Manifest.parse(jbytes(_manifest()), "m.json")
    assert m.layers[0].size == 20 and m.config.digest.encoded == "c" * 64
    for bad, word in ((_manifest(layers=None), "layers"), (_manifest(config=[]), "config"),
                      (_manifest(layers=[{"mediaType": model.OCI_LAYER, "digest": "sha256:" + "d" * 64,
                                          "size": -1}]), "negative"),
                      (_manifest(layers=[{"mediaType": model.OCI_LAYER, "digest": "sha256:" + "d" * 64,
                                          "size": True}]), "size"),
                      (_manifest(layers=[{"mediaType": model.OCI_LAYER, "size": 1}]), "digest")):
        with pytest.raises(errors.FormatError, match=word):
            model.Manifest.parse(jbytes(bad), "m.json")


def test_manifest_media_type_falls_back() -> None:
    doc = _manifest()
    del doc["mediaType"]
    assert model.Manifest.parse(jbytes(doc), "m.json", media_type=model.DOCKER_MANIFEST).is_docker
    assert model.document_kind(doc, None) == "manifest"
    assert model.document_kind({"manifests": []}, None) == "index"


def _config(**extra: object) -> dict[str, object]:
    return {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [E]}, **extra}


def test_config_null_tolerant() -> None:
    """Optional fields may be null, which means absent (docs/formats.md §2.4 rule 4)."""
    doc = _config(config=None, history=None, created=None, variant=None, author=None, container_config=None)
    c = model.ImageConfig.parse(jbytes(doc), "c.json")
    assert c.history == () and c.labels == {} and c.created is None
    c = model.ImageConfig.parse(jbytes(_config(config={"Labels": None, "Env": None, "Cmd": None,
                                                       "ExposedPorts": None, "Volumes": None},
                                               history=[{"created_by": None, "empty_layer": None}])), "c.json")
    assert c.labels == {} and c.history[0].empty_layer is False
    c = model.ImageConfig.parse(jbytes(_config(config={"Labels": {"a": "b", "empty": ""}}, future={"x": [1]})),
                                "c.json")
    assert c.labels == {"a": "b", "empty": ""}


def test_config_required_fields() -> None:
    with pytest.raises(errors.FormatError, match=r"rootfs\.type"):
        model.ImageConfig.parse(jbytes(_config(rootfs={"type": "other", "diff_ids": []})), "c.json")
    with pytest.raises(errors.FormatError, match="rootfs"):
        model.ImageConfig.parse(jbytes({"architecture": "amd64", "os": "linux"}), "c.json")
    with pytest.raises(errors.FormatError, match="diff_ids"):
        model.ImageConfig.parse(jbytes(_config(rootfs={"type": "layers", "diff_ids": ["sha256:zz"]})), "c.json")
    with pytest.raises(errors.FormatError, match="Labels"):
        model.ImageConfig.parse(jbytes(_config(config={"Labels": {"a": 1}})), "c.json")


def test_descriptor_annotations_and_unknown_fields() -> None:
    idx = model.Index.parse(jbytes({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/x-future", "digest": "sha256:" + "e" * 64, "size": 3, "annotations": None,
         "newField": {"a": 1}, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}],
        "annotations": {"": ""}}), "index.json")
    d = idx.manifests[0]
    assert d.annotations == {} and str(d.platform) == "linux/arm64/v8"
    with pytest.raises(errors.FormatError, match="annotations"):
        model.Index.parse(jbytes({"schemaVersion": 2, "manifests": [], "annotations": {"a": 1}}), "index.json")


def test_null_repotags_and_unknown_media_type_skipped(tmp_path: Path) -> None:
    """``"RepoTags": null`` in manifest.json and an unknown media type in index.json are not errors."""
    img = HandImage()
    files = layout_files(img, index=index_of([
        img.descriptor(**{model.REF_NAME: "latest"}),
        {"mediaType": "application/vnd.example.future+json", "digest": "sha256:" + "f" * 64, "size": 9}]))
    cfg = img.config_bytes()
    files["manifest.json"] = jbytes([{"Config": f"blobs/sha256/{sha(cfg)}", "RepoTags": None,
                                      "Layers": [f"blobs/sha256/{sha(x)}" for x in img.layers]}])
    tar = write_tar(tmp_path / "in.tar", files)
    with open_source(str(tar)) as src:
        assert len(src.candidates) == 1 and src.candidates[0].names == []
    lay = write_dir(tmp_path / "lay", {k: v for k, v in files.items() if k != "manifest.json"})
    with open_source(str(lay)) as src:
        assert [c.names for c in src.candidates] == [["latest"]]


# ------------------------------------------------------------------------------------------ pass-through

def test_byte_exact_pass_through(tmp_path: Path) -> None:
    """Odd-but-valid JSON bytes (whitespace, key order, escapes, trailing newline, unknown fields) survive."""
    base = HandImage()
    cfg_obj = base.config_obj()
    cfg_obj["zz-unknown"] = {"keep": ["me", None]}
    cfg = (json.dumps(cfg_obj, indent=3, sort_keys=True, ensure_ascii=True) + "\n").encode()
    cfg = cfg.replace(b'"amd64"', b'"\\u0061md64"')
    img = HandImage(raw_config=cfg)
    man_obj = json.loads(img.manifest_bytes())
    man_obj["annotations"] = {"org.example": "x"}
    man = json.dumps(man_obj, indent="\t").encode() + b"\r\n"
    img = HandImage(raw_config=cfg, raw_manifest=man)
    lay = write_dir(tmp_path / "in", layout_files(img))
    for fmt in ("oci-dir", "oci", "docker"):
        out = tmp_path / f"out-{fmt}"
        res = convert(str(lay), str(out), fmt=fmt)
        assert res["config"] == "sha256:" + sha(cfg)
        assert res["manifest"] == "sha256:" + sha(man)
        if fmt == "oci-dir":
            assert (out / "blobs/sha256" / sha(cfg)).read_bytes() == cfg
            assert (out / "blobs/sha256" / sha(man)).read_bytes() == man
        else:
            with tarfile.open(out) as t:
                f = t.extractfile(f"blobs/sha256/{sha(man)}")
                assert f is not None and f.read() == man
    # and back from the docker tar (config read through manifest.json): still the same bytes
    res = convert(str(tmp_path / "out-docker"), str(tmp_path / "again"), fmt="oci-dir")
    assert res["config"] == "sha256:" + sha(cfg) and res["manifest"] == "sha256:" + sha(man)


# ------------------------------------------------------------------------------------------ fast paths

_ANY = st.one_of(st.none(), st.booleans(), st.integers(-2, 2), st.just(1 << 63), st.just(""),
                 st.sampled_from([model.OCI_LAYER, "sha256:" + "a" * 64, "sha256:AB", "x", "2023-11-14T22:13:20Z"]),
                 st.just([]), st.just(["u"]), st.just({}), st.just({"k": "v"}), st.just({"k": 1}),
                 st.just({"os": "linux", "architecture": "arm64"}))


def _outcome(make: Any) -> object:
    try:
        return make()
    except errors.FormatError as e:
        return ("error", type(e), str(e))


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.sampled_from(["mediaType", "digest", "size", "annotations", "platform", "urls", "x"]),
                       _ANY) | _ANY)
def test_descriptor_fast_path_agrees_with_parse(obj: Any) -> None:
    """``Descriptor.from_obj`` gives what ``parse`` gives, value or error message, on any shape."""
    got = _outcome(lambda: model.Descriptor.from_obj(obj, "doc.json", "layers", 3))
    assert got == _outcome(lambda: model.Descriptor.parse(model.Fields(obj, "doc.json", "layers[3]")))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["created", "created_by", "author", "comment", "empty_layer", "x"]),
                       _ANY) | _ANY)
def test_history_fast_path_agrees_with_parse(obj: Any) -> None:
    got = _outcome(lambda: model.History.from_obj(obj, "cfg.json", 2))
    assert got == _outcome(lambda: model.History.parse(model.Fields(obj, "cfg.json", "history[2]")))


def test_bad_diff_id_named_by_its_entry() -> None:
    img = HandImage()
    cfg = img.config_obj()
    cfg["rootfs"]["diff_ids"][1] = "sha256:nothex"
    with pytest.raises(errors.FormatError) as ei:
        model.ImageConfig.parse(jbytes(cfg), "cfg.json")
    assert str(ei.value) == "cfg.json: rootfs.diff_ids[1]: 'sha256:nothex' is not a valid sha256 digest"


def test_digest_as_a_key() -> None:
    """Equal digests (however made) are one key; the same hex under another algorithm is another."""
    a = Digest.parse("sha256:" + "a" * 64)
    b = Digest("sha256", "a" * 64)
    c = Digest("sha512", "a" * 64)
    assert a == b and a is not b and hash(a) == hash(b)
    assert a != c
    assert {a: 1, b: 2, c: 3} == {Digest("sha256", "a" * 64): 2, c: 3}


_CONFIG_FIELDS = {"architecture": "amd64", "os": "linux", "variant": "v8", "created": "2023-11-14T22:13:20Z",
                  "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "a" * 64]},
                  "history": [{"created_by": "x"}], "config": {"Labels": {"k": "v"}}}
_CONFIG_VALUES = st.one_of(_ANY, st.just({"type": "layers", "diff_ids": []}), st.just({"type": "other"}),
                           st.just({"type": "layers", "diff_ids": ["sha256:AB"]}),
                           st.just({"type": "layers", "diff_ids": {}}), st.just([{"empty_layer": 1}]),
                           st.just({"Labels": []}), st.just({"Labels": {"k": 1}}), st.just({"Labels": None}))


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(_CONFIG_FIELDS)), _CONFIG_VALUES),
       st.sets(st.sampled_from(sorted(_CONFIG_FIELDS))))
def test_config_fast_path_agrees_with_parse(changed: dict[str, Any], dropped: set[str]) -> None:
    """``ImageConfig.parse``'s fast path gives what the field-by-field parse gives, value or error message."""
    obj = {k: v for k, v in {**_CONFIG_FIELDS, **changed}.items() if k not in dropped}
    got = _outcome(lambda: model.ImageConfig._fast(obj, b"{}", "cfg.json")
                   or model.ImageConfig._parse(obj, b"{}", "cfg.json"))
    assert got == _outcome(lambda: model.ImageConfig._parse(obj, b"{}", "cfg.json"))


def test_config_fast_path_taken_for_a_usual_config() -> None:
    assert model.ImageConfig._fast(dict(_CONFIG_FIELDS), b"{}", "cfg.json") is not None
