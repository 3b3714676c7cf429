"""Training files that become unreadable during a run (a network file system's hiccup, a file replaced mid-run):
each replaced sample is counted per step in metrics.jsonl (`substituted`, also when loader worker processes did
the loading) and in a summary at the end; above `data.max_substituted_fraction` the run stops with an error that
names the files. (Files unreadable from the start are found by the bucket scan and reported before training.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from mg_data.caches import CacheError, LatentStore
from mg_train import testing
from mg_train.transformer_train import run


@pytest.fixture
def two_lost_after_the_scan(tmp_path, monkeypatch):
    data = testing.make_training_data(tmp_path / "data", n=12)
    lost = {
        Path(row.split(",")[0]).with_suffix(".npz").as_posix()
        for row in Path(data.train).read_text().splitlines()[1:3]
    }
    original = LatentStore.sample

    def sample(self, key, rng):
        if key in lost:
            raise CacheError(f"{self.path(key)}: unreadable (injected)")
        return original(self, key, rng)

    monkeypatch.setattr(LatentStore, "sample", sample)  # the scan reads shapes only: it still passes
    return data


def config(data, out: Path, workers: int, **data_changes):
    return testing.transformer_train_config(
        data,
        out,
        data={"manifest": data.train, "frames": 16, "size": [32, 32], "batch_size": 4, **data_changes},
        train={"steps": 6, "log_every": 1, "jit": False, "num_workers": workers},
    )


@pytest.mark.parametrize("workers", [0, 2])
def test_replaced_samples_are_counted_per_step_and_in_total(
    two_lost_after_the_scan, tmp_path, capfd, workers
):
    run(config(two_lost_after_the_scan, tmp_path / "run", workers, max_substituted_fraction=0.5))
    steps = [m for m in testing.run_metrics(tmp_path / "run") if "loss" in m]
    replaced = sum(m["substituted"] for m in steps)
    assert replaced > 0 and all(isinstance(m["substituted"], int) for m in steps)
    assert f"data: rank 0: {replaced} of 24 training samples were replaced" in capfd.readouterr().err


def test_too_many_replaced_samples_stop_the_run(two_lost_after_the_scan, tmp_path):
    with pytest.raises(RuntimeError, match=r"injected.*more than data.max_substituted_fraction=0.01"):
        run(config(two_lost_after_the_scan, tmp_path / "run", 0, max_substituted_fraction=0.01))
