"""Text-embedding and latent caches in the contract's formats (docs/contracts.md 2-3)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mg_data import (
    CacheError,
    CacheKeyError,
    LatentCacheWriter,
    LatentStore,
    TextCacheWriter,
    TextEmbeddingStore,
    cache_key,
    write_latent,
)


def test_cache_keys():
    assert cache_key("clips/a.mp4") == "clips/a.npz"
    assert cache_key("clips/a.mp4", "other/b.npz") == "other/b.npz"
    assert cache_key("x.png", "custom") == "custom.npz"
    # one rule for every writer and reader: with or without an extension, a key names one file
    assert cache_key("clips/a") == cache_key("clips/a.npz") == cache_key("clips\\a.mp4") == "clips/a.npz"
    for bad in ("../escape.npz", "/abs/a.mp4", ""):
        with pytest.raises(CacheKeyError, match="relative"):
            cache_key(bad) if bad != "../escape.npz" else cache_key("a.mp4", bad)


def test_text_writer_entries_read_back_through_the_store(tmp_path):
    rng = np.random.default_rng(0)
    spec = {
        "ul2": {"dim": 4, "max_length": 6, "model": "m1"},
        "byt5": {"dim": 3, "max_length": 5, "model": "m2"},
    }
    writer = TextCacheWriter(tmp_path, spec)
    written = {}
    for key, n in (("clips/a.mp4", 2), ("clips/b", 7), ("__null__", 1)):
        for name in spec:
            emb = rng.standard_normal((n, spec[name]["dim"])).astype(np.float32)
            writer.write(name, key, emb, np.arange(n))
            written[name, key] = emb
    assert writer.path("ul2", "clips/a.mp4") == tmp_path / "ul2" / "clips" / "a.npz"
    assert writer.exists("byt5", "clips/b.npz") and writer.exists("byt5", "__null__")
    store = TextEmbeddingStore(tmp_path)
    emb, mask = store.get(cache_key("clips/a.mp4"))["ul2"]
    np.testing.assert_array_equal(emb[:2], written["ul2", "clips/a.mp4"])
    np.testing.assert_array_equal(mask, [1, 1, 0, 0, 0, 0])
    emb, mask = store.get("clips/b.npz")["byt5"]  # 7 tokens read back truncated to max_length 5
    np.testing.assert_array_equal(emb, written["byt5", "clips/b"][:5])
    np.testing.assert_array_equal(store.null()["byt5"][0][0], written["byt5", "__null__"][0])
    with np.load(tmp_path / "ul2" / "clips" / "b.npz") as data:
        assert data["tokens"].tolist() == list(range(7)) and data["mask"].dtype == np.uint8
    # reopening with the same encoders resumes; another model for an encoder is refused; new encoders join
    TextCacheWriter(tmp_path, {"ul2": spec["ul2"]})
    with pytest.raises(CacheError, match=r"encoder 'ul2' was cached with .*'m1'"):
        TextCacheWriter(tmp_path, {"ul2": {**spec["ul2"], "model": "other"}})
    TextCacheWriter(tmp_path, {"metaclip": {"dim": 2, "max_length": 3, "model": "m3"}})
    assert TextEmbeddingStore(tmp_path).encoders == ["byt5", "metaclip", "ul2"]


def test_text_writer_refuses_bad_entries_and_keys(tmp_path):
    writer = TextCacheWriter(tmp_path, {"ul2": {"dim": 4, "max_length": 6, "model": "m"}}, dtype="float16")
    with pytest.raises(CacheError, match=r"expected text_emb \(n, 4\)"):
        writer.write("ul2", "a", np.zeros((2, 5)), np.arange(2))
    with pytest.raises(CacheError, match=r"encoder .byt5. is not in meta\.json"):
        writer.write("byt5", "a", np.zeros((2, 4)), np.arange(2))
    with pytest.raises(CacheKeyError, match="reserved"):
        writer.write("ul2", "__null__.npz", np.zeros((2, 4)), np.arange(2))
    with pytest.raises(ValueError, match="dtype 'bfloat16'"):
        TextCacheWriter(tmp_path, {}, dtype="bfloat16")
    writer.write("ul2", "a", np.ones((2, 4)), np.arange(2))
    with np.load(tmp_path / "ul2" / "a.npz") as data:
        assert data["text_emb"].dtype == np.float16


def test_text_store_pads_truncates_and_masks(tmp_path, text_cache_writer):
    written = text_cache_writer(
        tmp_path / "text",
        {"clips/a.npz": {"ul2": 3, "byt5": 7}, "__null__.npz": {"ul2": 1, "byt5": 1}},
        dims={"ul2": 6, "byt5": 4},
        max_lengths={"ul2": 5, "byt5": 5},
    )
    store = TextEmbeddingStore(tmp_path / "text")
    assert store.encoders == ["ul2", "byt5"]
    out = store.get(cache_key("clips/a.mp4"))
    emb, mask = out["ul2"]
    assert emb.shape == (5, 6) and emb.dtype == np.float32 and mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(emb[:3], written["ul2"]["clips/a.npz"])
    assert not emb[3:].any()
    emb, mask = out["byt5"]  # 7 tokens truncated to 5
    np.testing.assert_array_equal(mask, np.ones(5))
    np.testing.assert_array_equal(emb, written["byt5"]["clips/a.npz"][:5])
    null_emb, null_mask = store.null()["ul2"]
    np.testing.assert_array_equal(null_mask, [1, 0, 0, 0, 0])
    np.testing.assert_array_equal(null_emb[0], written["ul2"]["__null__.npz"][0])
    only = TextEmbeddingStore(tmp_path / "text", encoders=["byt5"], max_lengths={"byt5": 9})
    emb, mask = only.get("clips/a.npz")["byt5"]
    assert list(only.get("clips/a.npz")) == ["byt5"] and emb.shape == (9, 4) and mask.sum() == 7


def test_text_store_reads_reference_padded_folders(tmp_path):
    # reference layout: one folder per encoder, text_emb padded to L with garbage in the padded rows
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((6, 3)).astype(np.float32)
    mask = np.array([1, 1, 0, 0, 0, 0], np.int64)
    (tmp_path / "ul2_emb_300").mkdir()
    np.savez(tmp_path / "ul2_emb_300" / "v.npz", text_emb=emb, mask=mask, tokens=np.arange(6))
    store = TextEmbeddingStore.from_folders({"ul2": tmp_path / "ul2_emb_300"})
    got, got_mask = store.get("v.npz")["ul2"]
    np.testing.assert_array_equal(got_mask, [1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(got[:2], emb[:2])
    assert not got[2:].any()
    longer = TextEmbeddingStore.from_folders({"ul2": tmp_path / "ul2_emb_300"}, max_lengths={"ul2": 8})
    assert longer.get("v.npz")["ul2"][0].shape == (8, 3)
    np.savez(tmp_path / "ul2_emb_300" / "half.npz", text_emb=emb.astype(np.float16), mask=mask)
    half, _ = store.get("half.npz")["ul2"]
    assert half.dtype == np.float32 and np.array_equal(
        half[:2], emb[:2].astype(np.float16).astype(np.float32)
    )


def test_text_store_errors_name_the_file_and_field(tmp_path, text_cache_writer):
    with pytest.raises(CacheError, match=r"meta\.json: not found.*from_folders"):
        TextEmbeddingStore(tmp_path)
    text_cache_writer(tmp_path / "t", {"a.npz": {"ul2": 2}}, dims={"ul2": 4}, max_lengths={"ul2": 3})
    store = TextEmbeddingStore(tmp_path / "t")
    with pytest.raises(CacheError, match=r"ul2/b\.npz: cache file not found"):
        store.get("b.npz")
    np.savez(
        tmp_path / "t" / "ul2" / "wide.npz", text_emb=np.zeros((2, 5), np.float32), mask=np.ones(2, np.uint8)
    )
    with pytest.raises(CacheError, match=r"wide\.npz: text_emb width 5 != ul2 dim 4"):
        store.get("wide.npz")
    np.savez(tmp_path / "t" / "ul2" / "nokey.npz", emb=np.zeros((2, 4), np.float32))
    with pytest.raises(CacheError, match=r"nokey\.npz: missing arrays \['text_emb'\]"):
        store.get("nokey.npz")
    (tmp_path / "t" / "ul2" / "junk.npz").write_bytes(b"junk")
    with pytest.raises(CacheError, match=r"junk\.npz: unreadable npz"):
        store.get("junk.npz")
    meta = json.loads((tmp_path / "t" / "meta.json").read_text())
    (tmp_path / "t" / "meta.json").write_text(json.dumps({**meta, "format": "something"}))
    with pytest.raises(CacheError, match="field 'format'"):
        TextEmbeddingStore(tmp_path / "t")
    with pytest.raises(CacheError, match=r"encoders \['metaclip'\] not in the cache"):
        (tmp_path / "t" / "meta.json").write_text(json.dumps(meta))
        TextEmbeddingStore(tmp_path / "t", encoders=["metaclip"])


META = dict(
    scaling_factor=1.5305, shift_factor=0.0609, latent_channels=4, frames=16, size=(64, 48), tae="tiny"
)


def test_latent_writer_and_store_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    mean = rng.standard_normal((4, 2, 8, 6)).astype(np.float32)
    std = rng.uniform(0.1, 0.5, (4, 2, 8, 6)).astype(np.float32)
    writer = LatentCacheWriter(tmp_path / "lat", **META)
    path = writer.write("clips/a.mp4", mean, std)
    assert path == tmp_path / "lat" / "clips" / "a.npz" and writer.exists("clips/a.mp4")
    meta = json.loads((tmp_path / "lat" / "meta.json").read_text())
    assert meta == {"format": "mg-latents", "version": 1, "scaling_factor": 1.5305, "shift_factor": 0.0609,
                    "latent_channels": 4, "frames": 16, "size": [64, 48], "tae": "tiny",
                    "temporal_compression": 8, "spatial_compression": 8}  # fmt: skip
    with np.load(path) as data:  # the file holds exactly the contract's arrays
        assert sorted(data.files) == ["latent_mean", "latent_std"]
    store = LatentStore(tmp_path / "lat")
    got_mean, got_std = store.load("clips/a.npz")
    np.testing.assert_array_equal(got_mean, mean)
    np.testing.assert_array_equal(got_std, std)
    assert store.shape("clips/a.npz") == (4, 2, 8, 6)
    z = store.scale(mean)
    np.testing.assert_allclose(z, (mean - 0.0609) * 1.5305, rtol=1e-6)
    assert sorted(p.name for p in (tmp_path / "lat" / "clips").iterdir()) == ["a.npz"]  # no temp files left


def test_latent_meta_records_the_compression_and_older_caches_read_as_the_contracts_8x(tmp_path):
    LatentCacheWriter(tmp_path / "a", **META, temporal_compression=4, spatial_compression=16)
    meta = LatentStore(tmp_path / "a").meta
    assert (meta.temporal_compression, meta.spatial_compression) == (4, 16)
    with pytest.raises(CacheError, match="existing cache was written with"):
        LatentCacheWriter(tmp_path / "a", **META)  # another TAE's compression: refused, like other fields
    old = {"format": "mg-latents", "version": 1, "scaling_factor": 1.0, "shift_factor": 0.0}  # before 0.6
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "meta.json").write_text(json.dumps(old))
    meta = LatentStore(tmp_path / "b").meta
    assert (meta.temporal_compression, meta.spatial_compression) == (8, 8)


def test_latent_sampling_follows_the_posterior(tmp_path):
    rng = np.random.default_rng(1)
    mean = rng.standard_normal((4, 3, 16, 16)).astype(np.float32)
    std = rng.uniform(0.2, 2.0, mean.shape).astype(np.float32)
    write_latent(tmp_path, "a.npz", mean, std, **META)
    store = LatentStore(tmp_path)
    z = store.sample("a.npz", np.random.default_rng(5))
    eps = (z - mean) / std
    assert abs(eps.mean()) < 0.05 and abs(eps.std() - 1) < 0.05
    np.testing.assert_array_equal(z, store.sample("a.npz", np.random.default_rng(5)))
    assert not np.array_equal(z, store.sample("a.npz", np.random.default_rng(6)))


def test_stores_keep_recent_entries_in_memory_within_the_limit(tmp_path, text_cache_writer):
    """With `memory_mb`, a read entry is served again without its file (equal to a fresh read, read-only),
    entries beyond the limit are dropped least recently used first, and 0 keeps nothing."""
    rng = np.random.default_rng(2)
    posteriors = {}
    for name in ("a", "b", "c"):
        mean = rng.standard_normal((4, 2, 8, 8)).astype(np.float32)  # 2 KiB each, 4 KiB with std
        posteriors[name] = (mean, np.full_like(mean, 0.5))
        write_latent(tmp_path / "lat", f"{name}.npz", *posteriors[name], **META)
    fresh = {name: LatentStore(tmp_path / "lat").load(f"{name}.npz") for name in posteriors}
    store = LatentStore(tmp_path / "lat", memory_mb=9 * 1024 / 2**20)  # room for two entries
    for name in ("a", "b", "a", "c"):  # "b" is now the least recently used and is dropped for "c"
        store.load(f"{name}.npz")
    assert len(store.memory) == 2 and store.memory.bytes == 2 * 4096
    for name in posteriors:
        (tmp_path / "lat" / f"{name}.npz").unlink()
    for name in ("a", "c"):
        mean, std = store.load(f"{name}.npz")
        np.testing.assert_array_equal(mean, fresh[name][0])
        np.testing.assert_array_equal(std, fresh[name][1])
        with pytest.raises(ValueError, match="read-only"):
            mean[0, 0, 0, 0] = 1.0
    z = store.sample("a.npz", np.random.default_rng(5))
    np.testing.assert_array_equal(z, fresh["a"][0] + fresh["a"][1] * np.random.default_rng(5).standard_normal(
        z.shape, dtype=np.float32))  # fmt: skip
    with pytest.raises(CacheError, match=r"b\.npz: cache file not found"):
        store.load("b.npz")
    with pytest.raises(ValueError, match="memory_mb"):
        LatentStore(tmp_path / "lat", memory_mb=-1)

    written = text_cache_writer(
        tmp_path / "text",
        {"x.npz": {"ul2": 3}, "__null__.npz": {"ul2": 1}},
        dims={"ul2": 6},
        max_lengths={"ul2": 5},
    )
    kept, plain = TextEmbeddingStore(tmp_path / "text", memory_mb=1), TextEmbeddingStore(tmp_path / "text")
    kept.get("x.npz")
    (tmp_path / "text" / "ul2" / "x.npz").unlink()
    emb, mask = kept.get("x.npz")["ul2"]
    np.testing.assert_array_equal(emb[:3], written["ul2"]["x.npz"])
    np.testing.assert_array_equal(mask, [1, 1, 1, 0, 0])
    with pytest.raises(CacheError, match=r"x\.npz: cache file not found"):
        plain.get("x.npz")
    assert len(plain.memory) == 0


def test_latent_writer_refuses_bad_input(tmp_path):
    writer = LatentCacheWriter(tmp_path, **META)
    good = np.zeros((4, 1, 2, 2), np.float32)
    with pytest.raises(CacheError, match=r"3 latent channels, meta\.json says latent_channels=4"):
        writer.write("a.mp4", np.zeros((3, 1, 2, 2)), np.zeros((3, 1, 2, 2)))
    with pytest.raises(CacheError, match="differs from latent_mean"):
        writer.write("a.mp4", good, np.zeros((4, 1, 2, 3)))
    with pytest.raises(CacheError, match=r"expected \(C, T', h, w\)"):
        writer.write("a.mp4", good[0], good[0])
    with pytest.raises(CacheError, match="non-finite"):
        writer.write("a.mp4", good + np.nan, good)
    with pytest.raises(CacheError, match="negative"):
        writer.write("a.mp4", good, good - 1)
    assert not writer.exists("a.mp4")
    with pytest.raises(CacheError, match="existing cache was written with"):
        LatentCacheWriter(tmp_path, **{**META, "scaling_factor": 1.0})
    LatentCacheWriter(tmp_path, **META)  # same settings reopen fine (resuming a caching job)
    with pytest.raises(CacheError, match=r"meta\.json: not found"):
        LatentStore(tmp_path / "nothing")
    with pytest.raises(CacheError, match=r"missing\.npz: cache file not found"):
        LatentStore(tmp_path).load("missing.npz")
