"""`python -m mg_train` is the `mg-train` command."""

import sys

from mg_train.cli import main

sys.exit(main())
