"""The one error every wire decoder raises on input it cannot decode."""

from __future__ import annotations


class PayloadError(ValueError):
    """A buffer that cannot be decoded; the message names the tensor and the fault."""
