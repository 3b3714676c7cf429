"""Runnable examples: `python -m mg_parallel.examples.mlp` (under msrun for several ranks)."""
