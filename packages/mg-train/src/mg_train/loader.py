"""Batches of an mg-data dataset in bucket-sampler order, optionally decoded ahead by worker processes.

mg-data stays framework-free; this is where it meets `mindspore.dataset`: with `num_workers > 0` each epoch's
remaining batches become a random-access `GeneratorDataset` source decoded by worker processes. Batch contents
depend only on (sampler seed, epoch, indices), never on the worker, so resuming from `state_dict()` replays
exactly the batches a continuous run would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from mg_data import BucketBatchSampler, VideoDataset, collate


class _EpochBatches:
    """Random-access source: item i is the collated batch i of a fixed list of index lists."""

    def __init__(self, dataset: VideoDataset, plan: list[list[int]], epoch: int, keys: Sequence[str]):
        self.dataset, self.plan, self.epoch, self.keys = dataset, plan, epoch, list(keys)

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int) -> tuple[np.ndarray, ...]:
        batch = collate([self.dataset.get(j, epoch=self.epoch) for j in self.plan[i]])
        return tuple(np.asarray(batch[k]) for k in self.keys)


class BatchLoader:
    """Endless iterator of batch dicts (numpy arrays for `keys`) following `sampler` across epochs."""

    def __init__(
        self,
        dataset: VideoDataset,
        sampler: BucketBatchSampler,
        keys: Sequence[str],
        num_workers: int = 0,
    ):
        missing = [k for k in keys if k not in dataset.output_keys]
        if missing:
            raise ValueError(f"dataset serves {dataset.output_keys}, not {missing}")
        if any(k == "caption" for k in keys):
            raise ValueError("captions are strings: load them by `index` from the manifest instead")
        self.dataset, self.sampler, self.keys, self.num_workers = dataset, sampler, list(keys), num_workers
        self.consumed = 0

    def state_dict(self) -> dict:
        """Sampler position after the batches handed out so far (prefetched ones are not counted)."""
        return self.sampler.state_dict(consumed=self.consumed)

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)
        self.consumed = 0

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        while True:
            epoch = self.sampler.epoch
            plan = list(self.sampler)
            source = _EpochBatches(self.dataset, plan, epoch, self.keys)
            for arrays in self._run(source):
                self.consumed += 1
                yield dict(zip(self.keys, arrays, strict=True))

    def _run(self, source: _EpochBatches) -> Iterator[tuple[np.ndarray, ...]]:
        if self.num_workers <= 0 or len(source) == 0:
            for i in range(len(source)):
                yield source[i]
            return
        import mindspore.dataset as msd

        pipeline = msd.GeneratorDataset(
            source,
            column_names=self.keys,
            shuffle=False,
            num_parallel_workers=self.num_workers,
            python_multiprocessing=True,
        )
        yield from pipeline.create_tuple_iterator(output_numpy=True, num_epochs=1)
