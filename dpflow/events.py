"""dpflow's Prefect events: what happened to which protected object, for automations.

Every flow says how it ended with one event, so an automation or an outer workflow can
chain on it without reading dpflow's catalog:

    resource   the protected object: ``dpflow.vm.<name>``, ``dpflow.lungroup.<name>``,
               ``dpflow.store.<name>``, with ``prefect.resource.name`` = the object's name,
               ``dpflow.kind`` and ``dpflow.attempt`` (1 for a planned run, 2... for a
               run an automation started again) as labels
    related    the version (role ``version``) and the session (role ``session``) when
               there is one; Prefect adds the flow run, flow, deployment and tags
    payload    status, message, and what the flow measured (bytes, seconds, ...)

Event names are ``dpflow.<what>.<outcome>``; NAMES lists them all. Emitting never fails
a flow: without a Prefect server to send to, the event is dropped by Prefect.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect.events import emit_event

Kind = Literal["vm", "lungroup", "database", "store"]
KIND_OF_OBJECT: dict[str, Kind] = {"vm": "vm", "vmfiles": "vm", "lungroup": "lungroup",
                                   "oracle": "database"}

NAMES = (
    "dpflow.backup.completed",      # a VM image or file backup made a version
    "dpflow.backup.failed",         # ... failed: nothing was catalogued, no snapshot left
    "dpflow.backup.skipped",        # ... skipped for lack of space (not a failure)
    "dpflow.backup.partial",        # ... made a version, but something was left out
    "dpflow.restore.completed",     # a VM, files or LUNs were given back and verified
    "dpflow.restore.failed",        # ... failed: no half-restored VM is left
    "dpflow.restore.partial",       # ... restored, but some objects could not be
    "dpflow.replica.created",       # an array replica set became a version
    "dpflow.replica.failed",        # ... failed: no replica set, no presentation left
    "dpflow.replica.rotated",       # old replica sets were deleted by rotation
    "dpflow.verify.completed",      # a store verify found every chunk of every version
    "dpflow.verify.damage",         # ... found damaged chunks: one event per broken VM
    "dpflow.forget.completed",      # versions were forgotten by a keep policy
    "dpflow.prune.completed",       # unreferenced chunks were freed
    "dpflow.proof.passed",          # a restore test booted and checked a version: signed
    "dpflow.proof.failed",          # ... found it wanting (the proof says which check)
)


def resource_id(kind: Kind, name: str) -> str:
    return f"dpflow.{kind}.{name}"


def emit(event: str, kind: Kind, name: str, *, session_id: str | None = None,
         version_id: str | None = None, attempt: int = 1, **payload: Any) -> Any:
    """Emit one dpflow event about object `name` of `kind`; returns Prefect's Event."""
    if event not in NAMES:
        raise ValueError(f"unknown dpflow event {event!r}: add it to dpflow.events.NAMES")
    resource = {"prefect.resource.id": resource_id(kind, name),
                "prefect.resource.name": name, "dpflow.kind": kind,
                "dpflow.attempt": str(attempt)}
    related = []
    if version_id:
        related.append({"prefect.resource.id": f"dpflow.version.{version_id}",
                        "prefect.resource.role": "version",
                        "prefect.resource.name": version_id})
    if session_id:
        related.append({"prefect.resource.id": f"dpflow.session.{session_id}",
                        "prefect.resource.role": "session",
                        "prefect.resource.name": session_id})
    return emit_event(event=event, resource=resource, related=related,
                      payload={k: v for k, v in payload.items() if v is not None})


def outcome(what: str, status: str) -> str:
    """The event name of a flow's end: outcome('backup', 'skipped') → dpflow.backup.skipped."""
    return f"dpflow.{what}.{status}"


def session_ended(session_kind: str, object_kind: str, name: str, status: str, *,
                  session_id: str, version_id: str | None = None, attempt: int = 1,
                  message: str = "", **payload: Any) -> Any:
    """The event of a catalogued session's end: backup-*, restore-*/recover-*, replicate-*.
    Sessions of other kinds (none today) emit nothing."""
    kind = KIND_OF_OBJECT.get(object_kind)
    what = ("backup" if session_kind.startswith("backup") else
            "restore" if session_kind.startswith(("restore", "recover")) else
            "replica" if session_kind.startswith("replicate") else None)
    if kind is None or what is None:
        return None
    ending = status
    if what == "replica":
        ending = "created" if status == "completed" else "failed"
    elif status not in ("completed", "failed", "skipped", "partial"):
        ending = "failed"  # aborted and the like: it did not end well
    return emit(outcome(what, ending), kind, name, session_id=session_id,
                version_id=version_id, attempt=attempt, status=status, message=message,
                session_kind=session_kind, object_kind=object_kind, **payload)
