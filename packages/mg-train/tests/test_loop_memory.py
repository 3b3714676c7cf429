"""The training loop does not grow in memory from step to step: a 19M-parameter transformer trained for 10 steps
in a fresh process (checkpoints every 2 steps, validation every 4) holds, after every step from the third on,
no more resident memory than after the third plus a quarter of the weights' bytes. (What the loop costs next to
a plain MindSpore loop is measured by benchmarks/bench_loop_memory.py.)"""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = r"""
import json, sys
from pathlib import Path

def rss():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

from mg_train.runtime import setup_mindspore
setup_mindspore()
from mg_train import testing
from mg_train.progress import Progress
from mg_train.transformer_train import run

after = {}
original = Progress.update
def update(self, step, **metrics):
    original(self, step, **metrics)
    if "loss" in metrics:
        after[step] = rss()
Progress.update = update
root = Path(sys.argv[1])  # the test's tmp_path: nothing is left behind in /tmp
data = testing.make_training_data(root / "data", n=12)
cfg = testing.transformer_train_config(
    data, root / "run",
    model={"preset": "tiny", "overrides": {"num_layers": 4, "hidden_size": 512, "ffn_size": 1408, "num_heads": 8,
                                           "pos_embed_max_size": [2, 4, 4]}},
    data={"manifest": data.train, "val_manifest": data.val, "frames": 16, "size": [32, 32], "batch_size": 2},
    train={"steps": 10, "save_every": 2, "keep_last": 2, "val_every": 4, "val_batches": 1},
)
run(cfg)
print(json.dumps(after))
"""


def test_resident_memory_does_not_grow_from_step_to_step(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    after = {int(k): v for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}
    weights_mb = 19e6 * 4 / 2**20
    baseline = after[3]
    grown = {
        step: round(mb - baseline)
        for step, mb in after.items()
        if step > 3 and mb - baseline > weights_mb / 4
    }
    assert not grown, f"resident memory grew past step 3 by (MB, per step): {grown}; all: {after}"
