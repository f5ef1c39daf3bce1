"""A local Prefect server (SQLite) under the project's own home, started once, reused.

Ephemeral Prefect costs 9–14 s per process (DESIGN.md); a started server answers in ms,
so the CLI and the demo start one in the background and talk to it. If PREFECT_API_URL
is already set (a real deployment), that server is used instead.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from dpflow.errors import UserError

SERVER_LOOP_S = 5  # repossessor interval and longest slot retry of the local server


def home() -> Path:
    return Path(os.environ.get("DPFLOW_HOME", ".dpflow")).resolve()


def _healthy(url: str) -> bool:
    import urllib.request  # here: `dpflow --help` need not load http.client

    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:  # noqa: S310 - local
            return bool(r.status == 200)
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def quiet_defaults() -> None:
    """Settings every dpflow process wants before Prefect reads its configuration."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # the CLI runs plan and catalog steps before any flow: their logs stay local, no warning
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    os.environ.setdefault("PREFECT_HOME", str(home() / "prefect"))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)


def quiet_console() -> None:
    """Keep Prefect's run logs off the terminal (they still go to the server and UI)."""
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")


def ensure_server() -> str:
    """The API URL of a healthy server; starts the local one if none is configured."""
    quiet_defaults()
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    state = home() / "prefect-server.json"
    if state.exists():
        url = str(json.loads(state.read_text())["api_url"])
        if _healthy(url):
            os.environ["PREFECT_API_URL"] = url
            return url
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    state.parent.mkdir(parents=True, exist_ok=True)
    log = open(home() / "prefect-server.log", "ab")  # noqa: SIM115 - owned by the child
    env = dict(os.environ, PREFECT_API_URL=url)
    # a killed session's lock is free again within dpflow.locks.LEASE_BOUND_S
    for setting in ("PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS",
                    "PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS"):
        env.setdefault(setting, str(SERVER_LOOP_S))
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
         "--port", str(port)], stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env,
        start_new_session=True)
    state.write_text(json.dumps({"api_url": url, "pid": proc.pid}))  # stoppable while starting
    # ~4 s on an idle 2-core machine; minutes when it is saturated (seen: > 90 s at load 14)
    deadline = time.monotonic() + float(os.environ.get("DPFLOW_SERVER_START_S", "240"))
    while time.monotonic() < deadline:
        if _healthy(url):
            os.environ["PREFECT_API_URL"] = url
            return url
        if proc.poll() is not None:
            break
        time.sleep(0.3)
    if proc.poll() is None:  # not healthy in time: stop it rather than leave it running
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
    state.unlink(missing_ok=True)
    raise UserError(f"the local Prefect server did not start; see {home() / 'prefect-server.log'}")


def stop_server() -> bool:
    state = home() / "prefect-server.json"
    if not state.exists():
        return False
    pid = json.loads(state.read_text())["pid"]
    try:
        os.killpg(pid, 15)
    except ProcessLookupError:
        pass
    state.unlink()
    return True


def ui_url(api_url: str) -> str:
    return api_url.removesuffix("/api")
