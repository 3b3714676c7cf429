"""A user who just calls encode/decode gets the fast CPU path: synchronous op launch (mg_tae.speed), switched on by
the first encode/decode in a fresh process, with the same numbers as MindSpore's asynchronous default."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

SCRIPT = """
import json, sys
import numpy as np
from mindspore import Tensor
from mindspore._c_expression import RuntimeConf
from mg_tae import TAEConfig, TemporalAutoencoder

conf = RuntimeConf.get_instance()
before = conf.is_launch_blocking()
model = TemporalAutoencoder(TAEConfig.tiny(), seed=0)
x = Tensor(np.random.default_rng(0).uniform(-1, 1, (1, 3, 9, 16, 16)).astype(np.float32))
z = model.encode(x).mean
y = model.decode(z, num_frames=9)
print(json.dumps({"before": before, "after": conf.is_launch_blocking(), "y": y.asnumpy().ravel().tolist()}))
"""


def _run(**env: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_encode_decode_switch_to_synchronous_launch_with_the_same_numbers():
    default = _run()
    opted_out = _run(MG_TAE_ASYNC_LAUNCH="1")
    assert default["before"] is False and default["after"] is True
    assert opted_out["before"] is False and opted_out["after"] is False  # $MG_TAE_ASYNC_LAUNCH=1 keeps async
    np.testing.assert_allclose(default["y"], opted_out["y"], rtol=0, atol=1e-6)
