"""`python -m mg_demo`: the same as the `mg-demo` command."""

import sys

from mg_demo.cli import main

sys.exit(main())
