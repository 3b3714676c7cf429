"""mg-tae test helpers: make the naive numpy references in tae_reference.py importable (importlib mode)."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
