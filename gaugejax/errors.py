"""Exceptions raised by gaugejax.

Every error carries a one-line message that says what is wrong and, where there is one, the fix.
The CLI prints ``error: <message>`` and exits non-zero.
"""


class GaugeJaxError(Exception):
    """Base class of every error gaugejax raises on bad input."""


class GaugeError(GaugeJaxError, ValueError):
    """A gauge is malformed, or is not a symmetry of the model it is applied to."""


class CheckpointError(GaugeJaxError, ValueError):
    """A checkpoint is missing, unreadable, of an unsupported format or architecture."""


class TransportError(GaugeJaxError, ValueError):
    """An object cannot be transported: unknown kind or format, or shapes that do not match."""


class NonFiniteError(CheckpointError):
    """A model produces NaN or infinite activations (a broken checkpoint, or an overflow in its dtype)."""


class StatsError(GaugeJaxError, ValueError):
    """Correlation statistics got batches of the wrong shape, or a bad setting."""
