"""From a config file to live drivers, resolved once per flow run and released after it.

A flow receives the config path (a plain string: what the Prefect UI shows and a
deployment stores), opens its Environment with `open_environment` and hands that one
object to its tasks. Nested flows and the CLI share the same instance (counted), and
what it opened (vCenter sessions, array connections, store packs, the catalog) is
released when the outermost user is done. Which driver class serves an endpoint is
decided by configuration through DRIVERS, never imported by a flow.
"""

from __future__ import annotations

import importlib
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from dpflow import config as cfg
from dpflow import datacentre
from dpflow.catalog import Catalog
from dpflow.errors import NotFound, UserError
from dpflow.store import ChunkStore
from dpflow.store.crypto import parse_key
from drivers.oracle_protocol import OracleDatabase
from drivers.protocols import ArrayDriver, Hypervisor, VmInfo

DRIVERS = {"vsphere": "drivers.vsphere:VSphere", "smis": "drivers.smis:open_array",
           "oracle": "drivers.oracle:open_database"}
_lock = threading.Lock()


class Environment:
    def __init__(self, path: Path | str, dc: cfg.DataCentre | None = None) -> None:
        self.path = path  # the file, or "data centre 'NAME'" for a registered one
        self.dc = dc if dc is not None else cfg.load(Path(path))
        self._hypervisors: dict[str, Hypervisor] = {}
        self._arrays: dict[str, ArrayDriver] = {}
        self._databases: dict[str, OracleDatabase] = {}
        self._catalog: Catalog | None = None
        self._stores: dict[tuple[str, str], ChunkStore] = {}  # (store, flow run) → open
        self._users = 0

    def hypervisor(self, name: str | None = None) -> Hypervisor:
        vc = self.dc.vcenters[0] if name is None else next(
            (v for v in self.dc.vcenters if v.name == name), None)
        if vc is None:
            raise UserError(f"unknown vCenter '{name}' (config: {self.path})")
        with _lock:
            if vc.name not in self._hypervisors:
                module, cls = DRIVERS["vsphere"].split(":")
                driver = getattr(importlib.import_module(module), cls)
                self._hypervisors[vc.name] = driver(vc, vc.password.resolve())
            return self._hypervisors[vc.name]

    def array(self, name: str | None = None) -> ArrayDriver:
        """The driver of a configured array (the first one by default)."""
        a = self.dc.array(name)
        with _lock:
            if a.name not in self._arrays:
                module, factory = DRIVERS[a.driver].split(":")
                make = getattr(importlib.import_module(module), factory)
                self._arrays[a.name] = make(a, a.password.resolve())
            return self._arrays[a.name]

    def database(self, name: str) -> OracleDatabase:
        """The driver of a configured Oracle database (one connection, reused)."""
        d = self.dc.database(name)
        with _lock:
            if d.name not in self._databases:
                module, factory = DRIVERS["oracle"].split(":")
                make = getattr(importlib.import_module(module), factory)
                self._databases[d.name] = make(d, d.password.resolve())
            return self._databases[d.name]

    def locate_vm(self, vm: str) -> tuple[str, VmInfo]:
        """The vCenter that holds `vm`, and the VM: the first that knows it wins."""
        for vc in self.dc.vcenters:
            try:
                return vc.name, self.hypervisor(vc.name).find_vm(vm)
            except NotFound:
                continue
        names = ", ".join(v.name for v in self.dc.vcenters)
        raise NotFound(f"unknown VM '{vm}': no vCenter in the config ({names}) has it; "
                       f"check the name in the vSphere client")

    def catalog(self) -> Catalog:
        with _lock:
            if self._catalog is None:
                self._catalog = Catalog(self.dc.catalog_url)
            return self._catalog

    def store(self, name: str | None = None, *, create: bool = False) -> ChunkStore:
        """The configured store, opened once per flow run (its tasks share it) and closed
        when that run ends; only a backup may `create` it (NotFound else).

        Why per flow run and not per environment: a store object's pending chunks are
        flushed or abandoned as a whole, so two VM backups running side by side must never
        share one."""
        s = self.dc.store(name)
        slot = (s.name, _flow_run_key())
        with _lock:
            if slot not in self._stores:
                key = parse_key(s.key.resolve()) if s.key else None
                self._stores[slot] = ChunkStore(
                    s.path, compression_level=s.compression_level, key=key,
                    pack_target=s.pack_size_mib << 20).init(create=create)
            return self._stores[slot]

    def release_run(self, run: str) -> None:
        """Close the stores a finished flow run opened."""
        with _lock:
            mine = [k for k in self._stores if k[1] == run]
            stores = [self._stores.pop(k) for k in mine]
        for st in stores:
            st.close()

    def close(self) -> None:
        """Release what was opened; the next use opens it again (so a closed environment
        is never a trap, only a cost)."""
        with _lock:
            stores, self._stores = list(self._stores.values()), {}
            catalog = self._catalog
        for st in stores:
            st.close()
        if catalog is not None:
            catalog.close()
        for h in self._hypervisors.values():
            h.close()
        self._hypervisors.clear()
        for a in self._arrays.values():
            a.close()
        self._arrays.clear()
        for d in self._databases.values():
            d.close()
        self._databases.clear()


_loaded: dict[tuple[str, int], Environment] = {}


def environment(config_path: str | Path) -> Environment:
    """The process-wide environment of a data centre: a registered name (a Prefect block,
    dpflow.datacentre) or a data-centre file; reloaded when the document changes."""
    if isinstance(config_path, str) and not datacentre.is_file_ref(config_path):
        source, text, base = datacentre.read(config_path)  # unknown name: one line
        key = (f"block:{config_path}", hash(text))
        with _lock:
            env = _loaded.get(key)
        if env is None:
            env = Environment(source, cfg.parse(text, source, base))
            with _lock:
                env = _loaded.setdefault(key, env)
        return env
    p = Path(config_path).resolve()
    try:
        mtime = p.stat().st_mtime_ns
    except OSError as exc:
        raise UserError(f"cannot read config {p}: {exc.strerror}; pass --config FILE") from exc
    with _lock:
        env = _loaded.get((str(p), mtime))
    if env is None:
        env = Environment(p)  # validates the file: a mistake is one UserError line
        with _lock:
            env = _loaded.setdefault((str(p), mtime), env)
    return env


@contextmanager
def open_environment(config_path: str | Path) -> Iterator[Environment]:
    """The environment for one flow run (or one CLI command): shared with nested users,
    released when the outermost one leaves, on every exit path."""
    env = environment(config_path)
    run = _flow_run_key()
    with _lock:
        env._users += 1
    try:
        yield env
    finally:
        with _lock:
            env._users -= 1
            last = env._users == 0
        if last:
            env.close()
        else:
            env.release_run(run)


_unit: ContextVar[str] = ContextVar("dpflow_unit_of_work", default="")


@contextmanager
def own_stores(env: Environment, label: str) -> Iterator[None]:
    """Work that may run beside its siblings inside one flow run (one VM's backup among
    the night's tasks): the stores it opens are its own, closed when it ends, so their
    pending chunks are never flushed or abandoned by a sibling."""
    key = f"{_flow_run_key()}#{label}#{uuid.uuid4().hex[:8]}"
    token = _unit.set(key)
    try:
        yield
    finally:
        _unit.reset(token)
        env.release_run(key)


def _flow_run_key() -> str:
    """Who owns the stores opened now: the unit of work (own_stores) this code runs in,
    else its flow run ('' outside any: tasks report their flow's run)."""
    unit = _unit.get()
    if unit:
        return unit
    if "prefect.context" not in sys.modules:  # no Prefect in this process: no flow run
        return ""
    from prefect.context import FlowRunContext

    # a task runs inside its flow's context (copied into task-runner threads too), and a
    # subflow started from a task gets its own: the innermost flow run is the owner
    flow = FlowRunContext.get()
    return str(flow.flow_run.id) if flow is not None and flow.flow_run is not None else ""
