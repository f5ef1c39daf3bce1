"""How a run ends, the same in the catalog, in Prefect and in the CLI's exit code.

    completed   every object protected or restored          exit 0   Prefect: Completed
    partial     done, but something was left out (listed)   exit 3   Prefect: "Partial"
    skipped     nothing done, by policy (no room ...)       exit 3   Prefect: "Skipped"
    failed      an error stopped it                         exit 1   Prefect: Failed
    (user mistake, found before anything was touched)       exit 2   Prefect: Failed

"Partial" and "Skipped" are Completed states with their own names: they show as such in
the Prefect UI, and a scheduled job that protected nothing never looks green.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

from prefect.states import Completed

T = TypeVar("T")


def ended(result: T, status: str, message: str = "") -> T:
    """The flow's return value: the result itself, or a named Completed state carrying it
    (a caller gets the result either way; the UI shows the name)."""
    if status in ("skipped", "partial"):
        state: Any = Completed(name=status.capitalize(), message=message, data=result)
        return cast(T, state)
    return result
