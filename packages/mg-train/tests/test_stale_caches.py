"""Caches cannot go stale, through the commands as an operator meets them: `cache-text` re-embeds a key whose
caption changed; `cache-latents` refuses to add to a cache made by other TAE weights at the same path; training
refuses a latent cache made by another TAE than the one it samples with. Each exits 2 naming what differs."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mg_data import TextEmbeddingStore, cache_key, make_synthetic_dataset
from mg_train import testing
from mg_train.testing import tiny_tae_with_motion


def mg_train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mg_train", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "GLOG_v": "3"},
    )


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("synth"), n=6, seed=1, size=32, num_frames=8)


def test_cache_text_re_embeds_a_changed_caption(synth, tmp_path):
    source = Path(synth.all_manifest)
    manifest = source.parent / f"{tmp_path.name}.csv"  # beside the videos: paths stay relative
    with source.open() as handle:
        rows = list(csv.DictReader(handle))

    def write(captions: list[str]) -> None:
        with manifest.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows({**row, "caption": caption} for row, caption in zip(rows, captions, strict=True))

    captions = [row["caption"] for row in rows]
    args = ("cache-text", f"manifest={manifest}", "text.encoders={ul2: tiny}", "batch_size=2")
    write(captions)
    first = mg_train(*args, f"output_dir={tmp_path / 'text'}")
    assert first.returncode == 0, first.stderr[-2000:]
    changed = [*captions[:2], "a purple hexagon moving nowhere", *captions[3:]]
    write(changed)
    again = mg_train(*args, f"output_dir={tmp_path / 'text'}")
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"wrote 1 and kept {len(rows) - 1} existing entries" in again.stdout
    fresh = mg_train(*args, f"output_dir={tmp_path / 'fresh'}")  # the changed manifest, from scratch
    assert fresh.returncode == 0
    key = cache_key(rows[2]["video"])
    got = TextEmbeddingStore(tmp_path / "text").get(key)["ul2"][0]
    want = TextEmbeddingStore(tmp_path / "fresh").get(key)["ul2"][0]
    np.testing.assert_array_equal(got, want)


def test_latents_of_other_tae_weights_are_refused_by_cache_latents_and_by_training(tmp_path):
    data = testing.make_training_data(tmp_path / "data", n=6, with_tae=False)
    tae = tmp_path / "tae"
    tiny_tae_with_motion(seed=4).save_pretrained(tae)
    args = ("cache-latents", f"checkpoint={tae}", f"manifest={data.train}", "frames=16", "size=[32, 32]")
    first = mg_train(*args, f"output_dir={tmp_path / 'latents'}")
    assert first.returncode == 0, first.stderr[-2000:]

    tiny_tae_with_motion(seed=5).save_pretrained(tae)  # retrained in place: same path, same config
    again = mg_train(*args, f"output_dir={tmp_path / 'latents'}")
    assert again.returncode == 2
    assert "tae_sha256" in again.stderr and "delete this one to re-encode" in again.stderr

    cfg = testing.transformer_train_config(
        data, tmp_path / "run", tae=str(tae), latent_cache=str(tmp_path / "latents")
    )
    import yaml

    from mg_train.config.loader import to_dict

    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(to_dict(cfg)))
    train = mg_train("train", "-c", str(config), "train.steps=1")
    assert train.returncode == 2
    assert "was encoded by other TAE weights" in train.stderr
