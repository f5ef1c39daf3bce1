"""The operator picks the restore point at run time, from the versions that exist now.

A deployment's form is built when the deployment is created, so a list of versions in a
flow signature would be stale by the next backup. Instead the restore run pauses and
asks: the question is a RunInput model made at run time with a `Literal` of the current
versions (newest first, the newest preselected), shown by the Prefect UI as a select
with a description table. The answer is checked when the run resumes; an answer that is
not one of the choices (possible through the API) asks again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from prefect import get_run_logger
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import BaseModel, Field, ValidationError, create_model

from dpflow.errors import UserError


class Choice(BaseModel):
    """One restore point as the operator sees it."""

    version_id: str
    created: datetime
    note: str = ""

    @property
    def label(self) -> str:
        when = self.created.strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"{when} · {self.version_id}" + (f" · {self.note[:60]}" if self.note else "")


def question(obj: str, choices: list[Choice]) -> type[RunInput]:
    """The run-time input model: one select whose options are the current versions."""
    labels = tuple(c.label for c in choices)
    return create_model(  # type: ignore[call-overload,no-any-return]
        "RestorePoint", __base__=RunInput,
        restore_point=(Literal[labels], Field(  # type: ignore[valid-type,arg-type]
            title=f"Restore point of {obj}",
            description="the version to restore; newest first")))


def description(obj: str, choices: list[Choice]) -> str:
    rows = "\n".join(f"| {c.created:%Y-%m-%d %H:%M:%S} | `{c.version_id}` | {c.note} |"
                     for c in choices)
    return (f"### Choose the restore point of **{obj}**\n\n{len(choices)} version(s) in the "
            f"catalog now:\n\n| created (UTC) | version | note |\n|---|---|---|\n{rows}\n")


def ask(obj: str, choices: list[Choice], timeout_s: int = 3600) -> str:
    """Pause this flow run until the operator picks one of `choices`; its version id."""
    if not choices:
        raise UserError(f"no version of '{obj}' in the catalog: back it up first")
    newest = sorted(choices, key=lambda c: c.created, reverse=True)
    model = question(obj, newest)
    by_label = {c.label: c.version_id for c in newest}
    log = get_run_logger()
    while True:
        try:
            answer: Any = pause_flow_run(
                wait_for_input=model.with_initial_data(description=description(obj, newest),
                                                       restore_point=newest[0].label),
                timeout=timeout_s, poll_interval=2)
        except ValidationError as exc:
            log.warning("not one of the restore points, asking again: %s",
                        exc.errors()[0]["msg"])
            continue
        chosen = by_label[answer.restore_point]
        log.info("operator chose version %s of %s", chosen, obj)
        return chosen
