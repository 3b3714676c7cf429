"""A Gradio web app for text-to-video and text-to-image generation with a trained mg checkpoint."""

from mg_demo.__about__ import __version__

__all__ = ["__version__"]
