"""Version of the mg-tae distribution (read by hatchling at build time)."""

__version__ = "0.5.1"
