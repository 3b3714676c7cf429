"""Version of the mg-data distribution (read by hatchling at build time)."""

__version__ = "0.8.3"
