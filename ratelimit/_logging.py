"""The package's logger, imported lazily: ``logging`` costs milliseconds at cold start, and a
limiter only logs when something goes wrong."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import logging


def logger() -> logging.Logger:
    """The ``"ratelimit"`` logger."""
    import logging

    return logging.getLogger("ratelimit")
