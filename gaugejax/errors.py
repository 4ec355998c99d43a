"""Exceptions raised by gaugejax.

Every error gaugejax raises on bad input is a :class:`GaugeJaxError`, with a one-line message that
says what is wrong and, where there is one, the fix. The CLI prints ``error: <message>`` and exits
non-zero. Each class also subclasses the builtin a caller would expect (``ValueError``, or
``TypeError`` for an argument of the wrong type), so ``except ValueError`` code keeps working.

The hierarchy::

    GaugeJaxError
    ├── InputError (ValueError)        an argument a function does not accept: shape, option name, range
    │   └── InputTypeError (TypeError) an argument of the wrong type
    ├── GaugeError (ValueError)        a malformed gauge, or one that is not a symmetry of the model
    ├── CheckpointError (ValueError)   a checkpoint that is missing, unreadable or unsupported
    │   └── NonFiniteError             a model whose activations are NaN or infinite
    ├── TransportError (ValueError)    an object that cannot be transported
    └── StatsError (ValueError)        correlation statistics given batches of the wrong shape, or a bad setting

Example:
  >>> from gaugejax import matching
  >>> try:
  ...     matching.match([[1.0, 2.0]], [[1.0, 2.0]], method="hungarian")
  ... except GaugeJaxError as e:
  ...     print(type(e).__name__, isinstance(e, ValueError))
  InputError True
"""


class GaugeJaxError(Exception):
    """Base class of every error gaugejax raises on bad input."""


class InputError(GaugeJaxError, ValueError):
    """An argument a library function does not accept: a wrong shape, an unknown method or option name,
    a value out of range (argument checks of matching, assignment, simulation, ...)."""


class InputTypeError(InputError, TypeError):
    """An argument of the wrong type (also a ``TypeError``, as Python's own argument errors are)."""


class GaugeError(GaugeJaxError, ValueError):
    """A gauge is malformed, or is not a symmetry of the model it is applied to."""


class CheckpointError(GaugeJaxError, ValueError):
    """A checkpoint is missing, unreadable, of an unsupported format or architecture."""


class TransportError(GaugeJaxError, ValueError):
    """An object cannot be transported: unknown kind or format, or shapes that do not match."""


class NonFiniteError(CheckpointError):
    """A model produces NaN or infinite activations (a broken checkpoint, or an overflow in its dtype)."""


class StatsError(InputError):
    """Correlation statistics got batches of the wrong shape, or a bad setting (an :class:`InputError`)."""
