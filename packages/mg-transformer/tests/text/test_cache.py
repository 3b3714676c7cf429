"""Embedding prompts into mg-data's text-embedding cache (docs/contracts.md section 2): layout, contents, resume,
errors. Entries are read back with mg-data's reader, the format's one owner."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mg_data import CacheError, TextEmbeddingStore, cache_key
from mg_transformer.text import ENCODER_NAMES, TextEmbedder, TextTruncationWarning


def read_entry(cache, name: str, key: str, max_length: int | None = None):
    """(embedding, mask) of one entry as mg-data's reader serves it (padded to `max_length`)."""
    lengths = {name: max_length} if max_length is not None else None
    store = TextEmbeddingStore(cache, encoders=[name], max_lengths=lengths)
    return store.get(cache_key(key))[name]


KEYS = ["clips/a.npz", "clips/b", "images/sub/c.npz"]
PROMPTS = ["a red circle moving left", "a blue square moving right on white", "a green star"]


@pytest.fixture(scope="module")
def tiny():
    return TextEmbedder.tiny(seed=0)


@pytest.fixture(scope="module")
def written(tiny, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    lines = []
    report = tiny.write_cache(cache, KEYS, PROMPTS, batch_size=2, progress=lines.append)
    return cache, report, lines


def test_layout_and_meta(tiny, written):
    cache, report, _ = written
    meta = json.loads((cache / "meta.json").read_text())
    assert meta == {
        "format": "mg-text-emb",
        "version": 1,
        "encoders": {
            name: {"dim": tiny.dims[name], "max_length": 64, "model": "preset:tiny:seed=0"}
            for name in ENCODER_NAMES
        },
    }
    files = sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file())
    expected = ["meta.json"] + [
        f"{name}/{key}"
        for name in ENCODER_NAMES
        for key in ("__null__.npz", "clips/a.npz", "clips/b.npz", "images/sub/c.npz")
    ]
    assert files == sorted(expected)  # no temporary files left behind
    assert report.written == dict.fromkeys(ENCODER_NAMES, 3) and report.skipped == dict.fromkeys(
        ENCODER_NAMES, 0
    )


def test_entries_hold_real_tokens_and_match_embed(tiny, written):
    cache, _, _ = written
    direct = tiny.embed(PROMPTS)
    for name in ENCODER_NAMES:
        for row, key in enumerate(KEYS):
            with np.load(cache / name / (key.removesuffix(".npz") + ".npz")) as data:
                assert set(data.files) == {"text_emb", "mask", "tokens", "caption_sha256"}
                n = len(PROMPTS[row].encode()) + 1
                assert data["text_emb"].shape == (n, tiny.dims[name]) and data["text_emb"].dtype == np.float32
                assert data["mask"].dtype == np.uint8 and data["mask"].tolist() == [1] * n
                assert data["tokens"].dtype == np.int32
                assert data["tokens"].tolist() == [b + 3 for b in PROMPTS[row].encode()] + [1]
            # a reader padding to max_length rebuilds exactly what embed returns
            emb, mask = read_entry(cache, name, key, max_length=64)
            np.testing.assert_allclose(emb, direct[name][0][row], atol=1e-6)
            np.testing.assert_array_equal(mask, direct[name][1][row])


def test_null_entry_is_the_empty_prompt(tiny, written):
    cache, _, _ = written
    null = tiny.embed_null()
    for name in ENCODER_NAMES:
        with np.load(cache / name / "__null__.npz") as data:
            emb, mask, tokens = data["text_emb"], data["mask"], data["tokens"]
        assert tokens.tolist() == [1] and mask.tolist() == [1]
        np.testing.assert_allclose(emb, null[name][0][0, :1], atol=1e-6)
        padded, padded_mask = TextEmbeddingStore(cache, encoders=[name]).null()[name]
        np.testing.assert_allclose(padded, null[name][0][0], atol=1e-6)
        np.testing.assert_array_equal(padded_mask, null[name][1][0])


def test_progress_lines(written):
    _, _, lines = written
    for name in ENCODER_NAMES:
        mine = [line for line in lines if line.startswith(f"[text cache] {name}:")]
        assert "3 prompts to embed, 0 already cached" in mine[0]
        assert "3/3 prompts (100%)" in mine[-1] and "prompts/s" in mine[-1]


def test_resume_skips_existing_and_rewrites_missing(tiny, tmp_path):
    tiny.write_cache(tmp_path, KEYS[:2], PROMPTS[:2], progress=False)
    target = tmp_path / "byt5" / "clips" / "b.npz"
    target.unlink()
    before = (tmp_path / "ul2" / "clips" / "a.npz").stat().st_mtime_ns
    report = tiny.write_cache(tmp_path, KEYS, PROMPTS, progress=False)
    assert report.written == {"ul2": 1, "byt5": 2, "metaclip": 1}
    assert report.skipped == {"ul2": 2, "byt5": 1, "metaclip": 2}
    assert target.is_file() and (tmp_path / "ul2" / "clips" / "a.npz").stat().st_mtime_ns == before
    again = tiny.write_cache(tmp_path, KEYS, PROMPTS, progress=False, skip_existing=False)
    assert again.written == dict.fromkeys(ENCODER_NAMES, 3)


def test_a_cache_of_another_model_is_refused(tiny, tmp_path):
    tiny.write_cache(tmp_path, KEYS[:1], PROMPTS[:1], progress=False)
    other = TextEmbedder.tiny(seed=1, names=["ul2"])
    with pytest.raises(CacheError, match=r"encoder 'ul2' was cached with .*preset:tiny:seed=0"):
        other.write_cache(tmp_path, KEYS[:1], PROMPTS[:1], progress=False)
    # a new encoder joins the existing meta.json
    TextEmbedder({"ul2": "tiny"}, max_lengths={"ul2": 64}).write_cache(
        tmp_path, KEYS[:1], PROMPTS[:1], progress=False
    )
    assert set(json.loads((tmp_path / "meta.json").read_text())["encoders"]) == set(ENCODER_NAMES)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "meta.json").write_text(json.dumps({"format": "mg-latents", "version": 1}))
    with pytest.raises(CacheError, match="expected 'mg-text-emb'"):
        tiny.write_cache(tmp_path / "x", KEYS[:1], PROMPTS[:1], progress=False)


def test_float16_entries(tmp_path):
    embedder = TextEmbedder.tiny(names=["metaclip"])
    embedder.write_cache(tmp_path, ["k"], ["a cat"], dtype="float16", progress=False)
    with np.load(tmp_path / "metaclip" / "k.npz") as data:
        assert data["text_emb"].dtype == np.float16
        np.testing.assert_allclose(
            data["text_emb"], embedder.embed(["a cat"])["metaclip"][0][0, :6], rtol=2e-3, atol=2e-3
        )


def test_truncation_is_reported_per_key(tmp_path):
    embedder = TextEmbedder.tiny(names=["byt5"], max_lengths={"byt5": 10})
    with pytest.warns(
        TextTruncationWarning,
        match=r"byt5: 1 of 2 prompts exceed max_length 10 .* key 'long' lost the most \(6 tokens: 'ABCDEF'\)",
    ):
        report = embedder.write_cache(
            tmp_path, ["short", "long"], ["tiny", "abcdefghiABCDEF"], progress=False
        )
    assert report.truncated == {"byt5": [("long", 6)]}
    with np.load(tmp_path / "byt5" / "long.npz") as data:
        assert data["text_emb"].shape[0] == 10


def test_bad_keys_and_arguments(tiny, tmp_path):
    for key, match in [
        ("/abs/x", "relative path"),
        ("a/../../x", "relative path"),
        ("__null__", "reserved"),
        ("", "non-empty"),
    ]:
        with pytest.raises(ValueError, match=match):
            tiny.write_cache(tmp_path, [key], ["p"], progress=False)
    with pytest.raises(ValueError, match="appears twice"):
        tiny.write_cache(tmp_path, ["a.npz", "a"], ["p", "q"], progress=False)
    with pytest.raises(ValueError, match="2 keys but 1 prompts"):
        tiny.write_cache(tmp_path, ["a", "b"], ["p"], progress=False)
    with pytest.raises(ValueError, match="dtype 'bfloat16'"):
        tiny.write_cache(tmp_path, ["a"], ["p"], dtype="bfloat16", progress=False)
    assert not (tmp_path / "meta.json").exists()  # nothing was written by the rejected calls


def test_movie_gen_bench_prompts_truncate_as_counted(tmp_path, shared_data):
    """Real prompts: the writer's truncation report agrees with counting UTF-8 bytes independently."""
    data = shared_data
    if data is None:
        pytest.skip("shared/data/moviegen_video_bench is not available")
    lines = (data / "moviegen_video_bench" / "MovieGenVideoBench.txt").read_text().splitlines()
    prompts = [line.strip() for line in lines if line.strip()][:24]
    keys = [f"bench/{i:04d}" for i in range(len(prompts))]
    embedder = TextEmbedder.tiny(names=["byt5"], max_lengths={"byt5": 100})
    with pytest.warns(TextTruncationWarning):
        report = embedder.write_cache(tmp_path, keys, prompts, batch_size=8, progress=False)
    expected = [(k, len(p.encode()) - 99) for k, p in zip(keys, prompts, strict=True) if len(p.encode()) > 99]
    assert expected, "the bench prompts should be longer than ByT5's 100 tokens"
    assert sorted(report.truncated["byt5"]) == sorted(expected)
