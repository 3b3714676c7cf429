"""Version of the mg-train distribution (read by hatchling at build time)."""

__version__ = "0.8.4"
