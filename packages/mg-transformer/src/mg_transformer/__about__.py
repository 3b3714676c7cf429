"""Version of the mg-transformer distribution (read by hatchling at build time)."""

__version__ = "0.6.1"
