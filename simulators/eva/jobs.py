"""Jobs on an injectable clock, and the run-time fault plan.

Why a clock object: an SMI-S client polls ConcreteJob until it ends; tests must be able
to see a job Running, then Completed, without sleeping, and benches must use wall time.
A job's effect on the array is applied when it is created (the point in time of a
replica is its creation); the job only reports progress until its duration elapsed, and
a job chosen to fail is applied nowhere and ends in Exception with an ErrorCode.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol


class Clock(Protocol):
    def now(self) -> float: ...


class WallClock:
    """Real time, for the server process and the benches."""

    def now(self) -> float:
        return time.monotonic()


class ShiftedClock:
    """Real time plus an offset a test can grow (a server process's injectable clock)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


class ManualClock:
    """Time that moves only when a test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self._t = start

    def now(self) -> float:
        return self._t

    def advance(self, seconds: float) -> None:
        self._t += seconds


JOB_RUNNING, JOB_COMPLETED, JOB_EXCEPTION = 4, 7, 10


@dataclass
class Job:
    """One asynchronous operation as the array reports it."""

    id: str
    name: str
    started: float
    duration: float
    affected: list[tuple[str, str]] = field(default_factory=list)  # (kind, name)
    error_code: int | None = None
    error_description: str = ""

    def state(self, now: float) -> int:
        if now < self.started + self.duration:
            return JOB_RUNNING
        return JOB_COMPLETED if self.error_code is None else JOB_EXCEPTION

    def percent(self, now: float) -> int:
        if self.duration <= 0:
            return 100
        return max(0, min(100, int(100 * (now - self.started) / self.duration)))

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class MethodFault:
    """What one CIM method does instead of its work, for `count` calls."""

    kind: str  # "rc" (return a code), "job" (job ends in Exception), "timeout" (hang)
    value: float = 0  # the return code / ErrorCode / seconds to hang
    description: str = "injected fault"
    count: int = 1


class Faults:
    """Faults set at run time, consumed by the CIM providers (thread-safe).

    `fail_method("CreateGroupReplica", rc=4)` makes the next call return 4 (Failed);
    `fail_job("CreateGroupReplica", error_code=0x8001)` makes its job end in Exception;
    `hang("ModifyReplicaSynchronization", seconds=3)` makes the provider not answer;
    `fill_pool("DG1")` (on the model) takes all the pool's free space.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plan: dict[str, list[MethodFault]] = {}
        self.fired: dict[str, int] = {}  # method -> faults applied since the last clear

    def fail_method(self, method: str, rc: int = 4, description: str = "injected fault",
                    count: int = 1) -> None:
        self._add(method, MethodFault("rc", rc, description, count))

    def fail_job(self, method: str, error_code: int = 32769,
                 description: str = "injected job failure", count: int = 1) -> None:
        self._add(method, MethodFault("job", error_code, description, count))

    def hang(self, method: str, seconds: float = 5.0, count: int = 1) -> None:
        self._add(method, MethodFault("timeout", seconds, "provider timeout", count))

    def clear(self) -> None:
        with self._lock:
            self._plan.clear()
            self.fired.clear()

    def _add(self, method: str, fault: MethodFault) -> None:
        with self._lock:
            self._plan.setdefault(method.lower(), []).append(fault)

    def take(self, method: str) -> MethodFault | None:
        """The fault for this call of `method`, if any (counts down)."""
        with self._lock:
            queue = self._plan.get(method.lower())
            if not queue:
                return None
            fault = queue[0]
            self.fired[method.lower()] = self.fired.get(method.lower(), 0) + 1
            fault.count -= 1
            if fault.count <= 0:
                queue.pop(0)
            return fault

    def to_json(self) -> dict[str, list[dict[str, Any]]]:
        with self._lock:
            return {m: [dict(f.__dict__) for f in q] for m, q in self._plan.items()}

    def load_json(self, data: dict[str, list[dict[str, Any]]]) -> None:
        with self._lock:
            self._plan = {m: [MethodFault(**f) for f in q] for m, q in data.items()}
