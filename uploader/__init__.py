"""uploader: async, resumable bulk uploader for the Adobe Target Bulk Profile Update API."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
