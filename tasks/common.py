"""What every dpflow task shares: retry only what may heal, never cache side effects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from prefect import task
from prefect.cache_policies import NO_CACHE

from dpflow.errors import TransientError, UserError

T = TypeVar("T")


def capable(driver: Any, protocol: type[T], missing: str) -> T:
    """The driver as `protocol`, or a UserError saying what is `missing` from it."""
    if not isinstance(driver, protocol):
        raise UserError(missing)
    return driver


def retry_if_transient(_task: Any, _run: Any, state: Any) -> bool:
    """Prefect retry condition: retry TransientError, give up on anything else."""
    try:
        state.result()
    except TransientError:
        return True
    except BaseException:  # noqa: BLE001 - any other failure is final
        return False
    return False


def step(*, retries: int = 2, delay: float = 1.0, **kw: Any) -> Callable[[Callable[..., Any]], Any]:
    """A dpflow step: a Prefect task retried on transient errors, never cached."""
    return task(retries=retries, retry_delay_seconds=delay, retry_condition_fn=retry_if_transient,
                cache_policy=NO_CACHE, **kw)
