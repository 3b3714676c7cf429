"""Version of the mg-parallel distribution (read by hatchling at build time)."""

__version__ = "0.4.0"
