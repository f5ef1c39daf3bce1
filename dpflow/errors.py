"""The core's view of the error tree: the drivers own it (they raise it at the hardware
boundary); the core, tasks and flows speak the same types."""

from drivers.errors import (
    DpflowError,
    NotFound,
    PermanentError,
    TransientError,
    UserError,
    first_line,
    is_transient,
)

__all__ = ["DpflowError", "NotFound", "PermanentError", "TransientError", "UserError",
           "first_line", "is_transient"]
