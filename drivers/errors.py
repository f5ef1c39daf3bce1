"""The exception tree every layer speaks, owned by the hardware boundary that raises most of it.

    DpflowError                 anything dpflow raises on purpose
    ├── UserError               bad input: printed as one line (what, why, how to fix), no traceback
    │   └── NotFound            a named VM, version, store ... does not exist
    ├── TransientError          worth retrying (timeouts, 503, dropped connections, busy)
    └── PermanentError          retrying will not help (the device refused for good)

Drivers translate library errors (pyVmomi faults, requests/pywbem errors) into these at
their boundary, so tasks decide retries from the type alone, as httpx does.
"""

from __future__ import annotations


class DpflowError(Exception):
    """Base of every error dpflow raises on purpose."""


class UserError(DpflowError):
    """A mistake in the user's input or environment; the message is the whole story."""


class NotFound(UserError):
    """A named object does not exist."""


class TransientError(DpflowError):
    """A failure that a retry may cure."""


class PermanentError(DpflowError):
    """A failure that a retry will not cure."""


def is_transient(exc: BaseException) -> bool:
    """Retry condition for Prefect tasks: retry only what may heal."""
    return isinstance(exc, TransientError)


def first_line(exc: BaseException) -> str:
    """What a session record or a summary keeps of an error: its first line, or its type."""
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__
