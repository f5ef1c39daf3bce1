"""Test helpers: the data centre's deployments served by `deployments/serve.py` in a
child process, as an administrator runs them, and reading runs and events back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value())


def write_dc(path: Path, vcsim: Any, **extra: Any) -> Path:
    """A data-centre file on the session's vcsim, its own store and catalog."""
    cfg = {
        "vcenters": [{"name": "vcsim", "host": vcsim.host, "port": vcsim.port,
                      "user": vcsim.username, "password": {"env": "DPFLOW_TEST_VC_PASSWORD"},
                      "ca_file": str(vcsim.ca_file)}],
        "stores": [{"name": "library", "path": "store",
                    "key": {"env": "DPFLOW_TEST_STORE_KEY"}}],
        **extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


def child_env(vcsim: Any) -> dict[str, str]:
    return dict(os.environ, PREFECT_API_URL=api_url(), DPFLOW_TEST_VC_PASSWORD=vcsim.password,
                DPFLOW_TEST_STORE_KEY="ab" * 32, PREFECT_RUNNER_POLL_FREQUENCY="2",
                PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL="CRITICAL")


class Served:
    """`python deployments/serve.py ...` in its own process group, stopped by its pid."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "deployments" / "serve.py"),
                                      *args], cwd=ROOT, env=env, stdout=self._out,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait_deployment(self, name: str, dc: str, timeout_s: float = 120) -> Any:
        """The deployment once this process has applied it (its `dc` parameter is ours:
        a deployment of the same name from an earlier process may still be there)."""
        from prefect.client.orchestration import get_client
        from prefect.exceptions import ObjectNotFound

        def ready() -> Any:
            with get_client(sync_client=True) as c:
                try:
                    d = c.read_deployment_by_name(name)
                except ObjectNotFound:
                    return None
            return d if d.parameters.get("dc") == dc else None
        return poll(ready, timeout_s, lambda: self.alive())

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"serve.py exited {self.proc.returncode}: "
                                 f"{self.log.read_text()[-2000:]}")
        return True

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._out.close()


def poll(fn: Callable[[], Any], timeout_s: float, check: Callable[[], Any] = lambda: True,
         every_s: float = 1.0) -> Any:
    """fn() until it is truthy; fails with what was last seen after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        check()
        got = fn()
        if got:
            return got
        assert time.monotonic() < deadline, f"nothing after {timeout_s:.0f} s"
        time.sleep(every_s)


def runs_of(deployment_id: Any) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

    with get_client(sync_client=True) as c:
        return c.read_flow_runs(flow_run_filter=FlowRunFilter(
            deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id])))


def events(name: str, resource_id: str) -> list[dict[str, Any]]:
    """The events called `name` about `resource_id` the server has stored."""
    import httpx

    body = {"filter": {"event": {"name": [name]}, "resource": {"id": [resource_id]}},
            "limit": 50}
    r = httpx.post(f"{api_url()}/events/filter", json=body, timeout=10)
    r.raise_for_status()
    return r.json()["events"]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def run_like_a_deployment(dc: str, name: str, form: dict[str, Any]) -> Any:
    """Run deployment `name` of deployments/serve.py as a worker runs a run started from
    its UI form, in this process: the form's values checked against the deployment's
    parameter schema (the UI's check), merged over the deployment's parameters, and the
    flow loaded from the deployment's entrypoint called with them."""
    from prefect.flows import load_flow_from_entrypoint
    from prefect.utilities.schema_tools.validation import validate

    from deployments.serve import build

    dep = next(d for d in build(dc, ["unused"]) if d.name == name)
    params = {**dep.parameters, **form}
    schema = dep._parameter_openapi_schema.model_dump(exclude_none=True)
    validate(params, schema, raise_on_error=True)
    flow = load_flow_from_entrypoint(f"{ROOT / dep.entrypoint.split(':')[0]}:"
                                     f"{dep.entrypoint.split(':')[1]}")
    return flow(**params)


def answer_question(flow_name: str, match: dict[str, Any], choose: str,
                    timeout_s: float = 120) -> list[str]:
    """Wait for a paused run of `flow_name` whose parameters include `match`, and answer
    its restore-point question with the offered label that contains `choose`; the labels
    it offered."""
    import json

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.input.run_input import keyset_from_paused_state

    def paused() -> Any:
        with get_client(sync_client=True) as c:
            runs = c.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])))
        return next((r for r in runs if r.state and r.state.is_paused()
                     and match.items() <= r.parameters.items()), None)

    run = poll(paused, timeout_s)
    keyset = keyset_from_paused_state(run.state)
    with get_client(sync_client=True) as c:
        schema = json.loads(c.read_flow_run_input(run.id, keyset["schema"]))
        prop = schema["properties"]["restore_point"]
        labels = list(prop["enum"]) if "enum" in prop else [prop["const"]]  # one choice: const
        c.resume_flow_run(run.id, run_input={"restore_point": next(
            label for label in labels if choose in label)})
    return labels
