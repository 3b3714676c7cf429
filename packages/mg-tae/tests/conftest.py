"""mg-tae test helpers.

Makes the naive numpy references in tae_reference.py importable (importlib mode), and runs PyNative
synchronously: on an oversubscribed 2-core machine MindSpore's asynchronous op pipeline made the tiny TAE's
forward pass ~15x slower (12 s vs 0.7 s); results are identical either way.
"""

import os
import sys

import mindspore as ms

sys.path.insert(0, os.path.dirname(__file__))
ms.set_context(pynative_synchronize=True)
