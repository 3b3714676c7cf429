"""mg-parallel tests: make the helper modules next to the tests importable (pytest runs in importlib mode)."""

import sys
from pathlib import Path

HERE = str(Path(__file__).parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
