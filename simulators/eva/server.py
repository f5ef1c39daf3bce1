"""The simulated EVA as its own process: SMI-S (CIM-XML over HTTPS) plus a SAN data path.

Why a process: the driver must talk to it exactly as to a real SMI-S provider, through a
plain `pywbem.WBEMConnection` with a verified certificate and a user/password. Besides
POST /cimom (CIM-XML), the same TLS port serves what is not SMI-S on a real array:
  GET/PUT /san/<host>/<lun>?offset=N[&length=N]  a host's reads/writes on a presented LUN
  GET /san/<host>                                  the LUNs presented to the host
                                                   [{lun, size, read_only, id}] (REPORT LUNS)
  GET /san/<host>/<lun>?allocated=1  its mapped extents [[offset, length], ...] (as SCSI
                                     GET LBA STATUS reports them for a thin LUN)
  POST /sim/control (JSON)                         run-time faults and job configuration
State lives in the root directory, so the array survives a restart.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from simulators.eva.cim import EvaConnection
from simulators.eva.cimxml import handle
from simulators.eva.jobs import ShiftedClock
from simulators.eva.link import decode_message
from simulators.eva.model import EvaArray
from simulators.eva.objects import Refusal
from simulators.eva.pump import REMOTE_OPS, Pump, remote_control


def control(array: EvaArray, req: dict[str, Any]) -> Any:
    """Apply one control request (shared by the HTTP endpoint and in-process callers)."""
    op = req["op"]
    f = array.faults
    if op == "fail_method":
        f.fail_method(req["method"], int(req.get("rc", 4)), req.get("description", "injected "
                      "fault"), int(req.get("count", 1)))
    elif op == "fail_job":
        f.fail_job(req["method"], int(req.get("error_code", 32769)),
                   req.get("description", "injected job failure"), int(req.get("count", 1)))
    elif op == "hang":
        f.hang(req["method"], float(req.get("seconds", 5)), int(req.get("count", 1)))
    elif op == "clear":
        f.clear()
        for p in array.pools:
            array.fill_pool(p, False)
    elif op == "fired":
        with f._lock:
            return dict(f.fired)
    elif op == "fill_pool":
        array.fill_pool(req["pool"], bool(req.get("filled", True)))
    elif op == "jobs":
        with array.lock:
            array.job_mode = bool(req["job_mode"])
            array.job_seconds = float(req.get("job_seconds", 0.0))
            array.save()
    elif op == "save":
        array.save()
    elif op in REMOTE_OPS:
        return remote_control(array, req)
    else:
        raise ValueError(f"unknown control op {op!r}")
    return {"ok": True}


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        import socket
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def _authorised(self) -> bool:
        want = base64.b64encode(f"{self.server.user}:{self.server.password}".encode()).decode()
        got = self.headers.get("Authorization", "")
        if hmac.compare_digest(got, f"Basic {want}"):
            return True
        self._send(401, b"", {"WWW-Authenticate": 'Basic realm="EVA"'})
        return False

    def _send(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def do_POST(self) -> None:  # noqa: N802
        body = self._body()
        if not self._authorised():
            return
        url = urlparse(self.path)
        if url.path == "/cimom":
            with self.server.cim_lock:
                out = handle(self.server.conn, body)
            self._send(200, out, {"Content-Type": 'application/xml; charset="utf-8"',
                                  "CIMOperation": "MethodResponse"})
        elif url.path == "/ca/message":  # the inter-site link (Continuous Access)
            msg, data = decode_message(body)
            out = json.dumps(self.server.array.ca_receive(msg, data)).encode()
            self._send(200, out, {"Content-Type": "application/json"})
        elif url.path == "/sim/control":
            try:
                out = json.dumps(control(self.server.array, json.loads(body))).encode()
                self._send(200, out, {"Content-Type": "application/json"})
            except (KeyError, ValueError, Refusal) as e:
                self._send(400, str(e).encode())
        else:
            self._send(404, b"")

    def _san(self) -> tuple[Any, int, dict[str, list[str]]] | None:
        parts = urlparse(self.path)
        bits = parts.path.strip("/").split("/")
        if len(bits) == 2 and bits[0] == "san" and self.command == "GET":
            try:  # REPORT LUNS
                luns = self.server.array.host_port(bits[1]).report_luns()
                self._send(200, json.dumps(luns).encode(), {"Content-Type": "application/json"})
            except Refusal as e:
                self._send(409, e.words.encode())
            return None
        if len(bits) != 3 or bits[0] != "san":
            self._send(404, b"")
            return None
        return self.server.array.host_port(bits[1]), int(bits[2]), parse_qs(parts.query)

    def do_PUT(self) -> None:  # noqa: N802
        body = self._body()
        if not self._authorised() or (san := self._san()) is None:
            return
        port, lun, q = san
        try:
            port.write(lun, int(q["offset"][0]), body)
            self._send(204, b"")
        except Refusal as e:
            self._send(409, e.words.encode())

    def do_GET(self) -> None:  # noqa: N802
        if not self._authorised() or (san := self._san()) is None:
            return
        port, lun, q = san
        try:
            if "allocated" in q:  # GET LBA STATUS: the mapped extents of a thin LUN
                body = json.dumps(port.allocated(lun)).encode()
                self._send(200, body, {"Content-Type": "application/json"})
                return
            self._send(200, port.read(lun, int(q["offset"][0]), int(q["length"][0])))
        except Refusal as e:
            self._send(409, e.words.encode())


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    array: EvaArray
    conn: EvaConnection
    cim_lock: threading.Lock
    user: str
    password: str


def serve(root: Path, port: int, user: str, password: str, cert: str, key: str) -> None:
    """Run the array until SIGTERM/SIGINT; prints 'LISTENING <port>' when ready."""
    array = EvaArray(root, clock=ShiftedClock())
    pump = Pump(array)
    srv = _Server(("127.0.0.1", port), _Handler)
    srv.array, srv.conn, srv.cim_lock = array, EvaConnection(array, False), threading.Lock()
    srv.user, srv.password = user, password
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)

    def stop(*_: Any) -> None:
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"LISTENING {srv.server_address[1]}", flush=True)
    pump.start()
    try:
        srv.serve_forever(poll_interval=0.1)
    finally:
        pump.stop()
        array.close()


def main(argv: list[str] | None = None) -> None:
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True, type=Path)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    args = ap.parse_args(argv)
    serve(args.root, args.port, os.environ.get("EVA_USER", "admin"),
          os.environ.get("EVA_PASSWORD", ""), args.cert, args.key)


def spawn(root: Path, cert: str, key: str, user: str, password: str) -> tuple[Any, int]:
    """Start `main` in a child process; return (Popen, port) once it listens."""
    env = dict(os.environ, EVA_USER=user, EVA_PASSWORD=password)
    proc = subprocess.Popen([sys.executable, "-m", "simulators.eva.server", "--root", str(root),
                             "--cert", cert, "--key", key], stdout=subprocess.PIPE, env=env,
                            text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("LISTENING"):
        proc.kill()
        raise RuntimeError(f"EVA simulator did not start (exit {proc.wait()})")
    return proc, int(line.split()[1])


if __name__ == "__main__":
    main()
