"""Share Gateway: a reverse proxy that shares personal data only as contracts allow."""

from __future__ import annotations

__version__ = "0.1.0"
