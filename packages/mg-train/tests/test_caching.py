"""cache-latents and cache-text: the caches equal a direct `tae.encode` / `TextEmbedder.embed`, mg-data's readers
and `VideoDataset` find every entry, reruns resume (skip what exists), and unreadable clips are never cached."""

from __future__ import annotations

import io

import numpy as np
import pytest
from mindspore import Tensor

from mg_data import (
    LatentStore,
    TextEmbeddingStore,
    VideoDataset,
    cache_key,
    load_manifest,
    make_synthetic_dataset,
)
from mg_tae import TemporalAutoencoder
from mg_train import caching
from mg_train.config.loader import ConfigError, load_config
from mg_train.config.schema import CacheLatentsConfig, CacheTextConfig
from mg_train.testing import tiny_tae_with_motion


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("synth"), n=10, seed=2, size=48, num_frames=12)


@pytest.fixture(scope="module")
def tae_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tae") / "tae"
    tiny_tae_with_motion(seed=4, scaling_factor=0.9, shift_factor=0.1).save_pretrained(folder)
    return folder


def _latents_config(synth, tae_dir, out, *overrides):
    return load_config(
        CacheLatentsConfig,
        None,
        [
            f"checkpoint={tae_dir}",
            f"manifest={synth.all_manifest}",
            f"output_dir={out}",
            "frames=9",
            "size=[32, 32]",
            "batch_size=4",
            *overrides,
        ],
    )


def test_latent_cache_equals_direct_encoding_and_feeds_the_dataset(synth, tae_dir, tmp_path, capsys):
    out = tmp_path / "latents"
    assert caching.cache_latents(_latents_config(synth, tae_dir, out)) == out
    store = LatentStore(out)
    meta = store.meta
    assert (meta.scaling_factor, meta.shift_factor, meta.latent_channels) == (0.9, 0.1, 16)
    assert (meta.frames, meta.size, meta.tae) == (9, (32, 32), str(tae_dir.resolve()))
    manifest = load_manifest(synth.all_manifest)
    model = TemporalAutoencoder.from_pretrained(tae_dir)
    clips = VideoDataset(manifest, num_frames=9, size=(32, 32), start="center")
    for i, row in enumerate(manifest.rows):
        mean, std = store.load(cache_key(row.video))
        posterior = model.encode(Tensor(clips[i]["video"][None]))  # one clip at a time (the cache batched 4)
        assert mean.shape == (16, 2, 4, 4)
        np.testing.assert_allclose(mean, posterior.mean.asnumpy()[0], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(std, posterior.std.asnumpy()[0], rtol=1e-4, atol=1e-6)
    # mg-data serves them: z = mean + std * eps from the dataset's own generator
    dataset = VideoDataset(manifest, latent_cache=out, seed=7)
    sample = dataset[3]
    mean, std = store.load(cache_key(manifest.rows[3].video))
    eps = (sample["latent"] - mean) / std
    assert sample["latent"].shape == (16, 2, 4, 4) and int(sample["index"]) == 3 and not dataset.errors
    assert 0.5 < eps.std() < 1.5 and abs(eps.mean()) < 0.3


def test_latent_cache_resumes_and_skips_unreadable_clips(synth, tae_dir, tmp_path, capsys):
    out = tmp_path / "latents"
    lines = synth.all_manifest.read_text().splitlines()
    broken = lines[1].split(",")
    broken[0] = "videos/gone.mp4"
    manifest = synth.all_manifest.parent / "subset.csv"
    manifest.write_text("\n".join([lines[0], lines[2], ",".join(broken), lines[3]]) + "\n")
    cfg = _latents_config(synth, tae_dir, out, f"manifest={manifest}")
    with pytest.warns(UserWarning, match="gone.mp4"):
        caching.cache_latents(cfg)
    assert "wrote 2, skipped 0 already cached, 1 unreadable" in capsys.readouterr().out
    assert not (out / "videos" / "gone.npz").exists()
    kept = out / cache_key(lines[2].split(",")[0])
    removed = out / cache_key(lines[3].split(",")[0])
    stamp, first = kept.stat().st_mtime_ns, removed.read_bytes()
    removed.unlink()
    with pytest.warns(UserWarning, match="gone.mp4"):
        caching.cache_latents(cfg)
    assert "wrote 1, skipped 1 already cached, 1 unreadable" in capsys.readouterr().out
    assert kept.stat().st_mtime_ns == stamp  # untouched
    with np.load(removed) as again, np.load(io.BytesIO(first)) as before:
        # re-encoded alone, first in a batch of two: equal up to the batch's float rounding
        np.testing.assert_allclose(again["latent_mean"], before["latent_mean"], rtol=1e-4, atol=1e-5)
    # a cache written with other settings is refused instead of mixed
    with pytest.raises(ConfigError, match=r"output_dir: .*existing cache was written with"):
        caching.cache_latents(_latents_config(synth, tae_dir, out, f"manifest={manifest}", "frames=8"))


def test_text_cache_equals_direct_embedding_and_feeds_the_dataset(synth, tmp_path):
    from mg_transformer.text import TextEmbedder

    out = tmp_path / "text"
    encoders = {"ul2": "tiny", "metaclip": "tiny"}
    cfg = load_config(
        CacheTextConfig,
        None,
        [
            f"manifest={synth.all_manifest}",
            f"output_dir={out}",
            "text.encoders={ul2: tiny, metaclip: tiny}",
            "text.seed=3",
            "text.max_lengths={ul2: 40}",
            "batch_size=4",
        ],
    )
    assert caching.cache_text(cfg) == out
    manifest = load_manifest(synth.all_manifest)
    captions = [row.caption for row in manifest.rows]
    direct = TextEmbedder(encoders, seed=3, max_lengths={"ul2": 40}).embed(captions)
    store = TextEmbeddingStore(out)
    assert sorted(store.encoders) == ["metaclip", "ul2"]
    for i, row in enumerate(manifest.rows):
        for name, (emb, mask) in store.get(cache_key(row.video)).items():
            np.testing.assert_array_equal(mask, direct[name][1][i])
            np.testing.assert_allclose(emb, direct[name][0][i], rtol=1e-5, atol=1e-6)
    assert store.get(cache_key(manifest.rows[0].video))["ul2"][0].shape[0] == 40
    null = TextEmbedder(encoders, seed=3, max_lengths={"ul2": 40}).embed_null()
    np.testing.assert_allclose(store.null()["ul2"][0], null["ul2"][0][0], rtol=1e-5, atol=1e-6)
    dataset = VideoDataset(manifest, num_frames=4, size=32, text_cache=out)
    sample = dataset[2]
    np.testing.assert_allclose(sample["metaclip_emb"], direct["metaclip"][0][2], rtol=1e-5, atol=1e-6)
    assert not dataset.errors


@pytest.mark.parametrize(
    ("command", "overrides", "message"),
    [
        ("latents", ("checkpoint=/no/such/tae",), "checkpoint: /no/such/tae: no tae model here"),
        ("latents", ("manifest=/no/such.csv",), "manifest: CSV manifest"),
        ("latents", ("size=[30, 32]",), "positive multiples of 8"),
        ("latents", ("output_dir=",), "output_dir is not set"),
        ("text", ("manifest=/no/such.csv",), "manifest: CSV manifest"),
        ("text", ("text.encoders={t5: tiny}",), "text.encoders"),
    ],
)
def test_bad_inputs_fail_before_any_work(synth, tae_dir, tmp_path, command, overrides, message):
    out = tmp_path / "cache"
    if command == "latents":
        run, cfg = caching.cache_latents, _latents_config(synth, tae_dir, out, *overrides)
    else:
        cfg = load_config(
            CacheTextConfig, None, [f"manifest={synth.all_manifest}", f"output_dir={out}", *overrides]
        )
        run = caching.cache_text
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        run(cfg)
    assert not out.exists()
