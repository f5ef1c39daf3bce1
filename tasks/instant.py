"""Steps of an Instant VM Recovery: publish, mount, register, and take it all down again.

What a recovery holds (the published version's server, the NFS datastore, the VM) is
written to a small state file under DPFLOW_HOME/instant/<name>.json as soon as it
exists, so a later `abort` (another process, another day) finds and removes every piece.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from prefect import get_run_logger
from pydantic import BaseModel

from dpflow import publish_serve
from dpflow.environment import Environment
from dpflow.errors import UserError, first_line
from dpflow.prefect_server import home
from drivers.protocols import VmInfo
from drivers.vsphere_instant import InstantRecovery
from tasks.common import step


class InstantState(BaseModel):
    """Everything one instant recovery holds, in the order it was taken."""

    name: str  # the recovered VM
    vm: str  # the protected VM it came from
    version_id: str
    session_id: str
    vcenter: str
    host: str
    datastore: str
    mount: str
    overlay: str
    home_datastore: str = ""  # where the VM's configuration lives, the default migration target
    network: str = ""  # every NIC of the saved configuration is on this network
    pid: int | None = None
    mounted: bool = False
    vm_moref: str | None = None


def state_dir() -> Path:
    return home() / "instant"


def state_path(name: str) -> Path:
    return state_dir() / f"{name}.json"


def save(state: InstantState) -> None:
    state_dir().mkdir(parents=True, exist_ok=True)
    tmp = state_path(state.name).with_suffix(".tmp")
    tmp.write_text(state.model_dump_json(indent=1))
    tmp.replace(state_path(state.name))


def load(name: str) -> InstantState:
    try:
        return InstantState.model_validate_json(state_path(name).read_text())
    except FileNotFoundError:
        known = sorted(p.stem for p in state_dir().glob("*.json")) if state_dir().is_dir() else []
        raise UserError(f"no instant recovery named '{name}' (running: "
                        f"{', '.join(known) or 'none'})") from None


def check_tools() -> None:
    if shutil.which("fusermount3") is None:
        raise UserError("fusermount3 not found: install Debian's fuse3 (./dev setup) to "
                        "publish versions for Instant VM Recovery")


@step(name="publish version", retries=0)
def publish(env: Environment, state: InstantState) -> int:
    from dpflow.store.manifest import read_manifest

    row = env.catalog().version(state.version_id)
    s = env.dc.store(row.store)
    disks = read_manifest(env.store(row.store), state.version_id).disks
    pid = publish_serve.start(s.path, s.compression_level, s.key.resolve() if s.key else None,
                              state.vm, disks, Path(state.mount), Path(state.overlay),
                              state.version_id)
    get_run_logger().info("version %s published at %s (pid %d)", state.version_id,
                          state.mount, pid)
    return pid


@step(name="mount published datastore")
def mount(env: Environment, state: InstantState) -> None:
    InstantRecovery(env.hypervisor(state.vcenter)).mount_nfs(
        state.host, state.datastore, "127.0.0.1", state.mount)


@step(name="register VM on published disks")
def register(env: Environment, state: InstantState, source: VmInfo, marker: str) -> VmInfo:
    files = [f"[{state.datastore}] {source.name}/disk{i}.vmdk" for i in range(len(source.disks))]
    return InstantRecovery(env.hypervisor(state.vcenter)).register_vm(
        source, state.name, marker, state.host, files, source.datastore,
        [state.network] * len(source.networks))


def check_network(env: Environment, vcenter: str, network: str) -> None:
    """UserError (nothing started) when the network the user named does not exist."""
    known = InstantRecovery(env.hypervisor(vcenter)).network_names()
    if network not in known:
        raise UserError(f"no network '{network}' on vCenter {vcenter} (there: "
                        f"{', '.join(sorted(known))}): name one of them with --network, or "
                        f"leave it out for the isolated network")


@step(name="migrate VM to production datastore", retries=0)
def migrate(env: Environment, state: InstantState, datastore: str) -> VmInfo:
    hv = env.hypervisor(state.vcenter)
    vm = VmInfo(name=state.name, moref=state.vm_moref or "", power_state="", datastore="")
    return InstantRecovery(hv).relocate(vm, datastore)


def check_room(env: Environment, state: InstantState, datastore: str) -> int:
    """The disks' size; UserError (nothing started) when the datastore has less free."""
    hv = env.hypervisor(state.vcenter)
    info = hv.find_vm(state.name)
    need = sum(d.capacity_bytes for d in info.disks)
    free = hv.datastore_free_bytes(datastore)
    if free < need:
        raise UserError(f"datastore {datastore} has {free:,} bytes free, the disks of "
                        f"{state.name} need {need:,}: nothing was started; migrate to another "
                        f"datastore (--datastore) or make room")
    return need


def store_line(env: Environment, state: InstantState) -> str | None:
    """One line saying the version's store cannot be read now, or what the publishing
    server last recorded about it (None: the store answers and nothing was recorded)."""
    from dpflow.publish_health import read_health, store_problem

    row = env.catalog().version(state.version_id)
    root = env.dc.store(row.store).path
    problem = store_problem(root)
    if problem is not None:
        return (f"store '{row.store}' at {root} is unreachable ({problem}): {state.name} "
                f"runs from the published version, its reads of data not read yet fail; "
                f"production is untouched")
    seen = read_health(Path(state.overlay))
    if seen.get("read_errors"):
        return (f"store '{row.store}' was unreachable earlier: {seen['read_errors']} read(s) "
                f"of {state.name} failed, the last at {seen.get('at')}"
                + (f" ({seen['error']})" if seen.get("error") else ""))
    return None


def check_store(env: Environment, state: InstantState) -> None:
    """UserError (nothing started) when the store cannot be read: a migration reads every
    chunk the guest has not read yet."""
    from dpflow.publish_health import store_problem

    row = env.catalog().version(state.version_id)
    root = env.dc.store(row.store).path
    problem = store_problem(root)
    if problem is not None:
        raise UserError(f"store '{row.store}' at {root} is unreachable ({problem}): the "
                        f"migration of {state.name} reads the version from it; nothing was "
                        f"started, production is untouched, {state.name} keeps running; "
                        f"bring the store back, then migrate")


def health(env: Environment, state: InstantState) -> dict[str, object]:
    """What `dpflow instant-recover --status` shows of one recovery."""
    alive = False
    if state.pid is not None:
        try:
            os.kill(state.pid, 0)
            alive = True
        except ProcessLookupError:
            pass
    return {"name": state.name, "vm": state.vm, "version": state.version_id,
            "datastore": state.datastore, "server": "running" if alive else "stopped",
            "mounted": os.path.ismount(state.mount), "store": store_line(env, state) or "ok"}


def recoveries() -> list[InstantState]:
    return [load(p.stem) for p in sorted(state_dir().glob("*.json"))] \
        if state_dir().is_dir() else []


def take_down(env: Environment, state: InstantState) -> list[str]:
    """Every piece the state names, in reverse: VM, datastore, server, overlay; then the
    state file. Each piece is tried even when one before failed; what stays is returned."""
    left: list[str] = []
    hv = env.hypervisor(state.vcenter)
    if state.vm_moref:
        try:
            hv.destroy_vm(VmInfo(name=state.name, moref=state.vm_moref, power_state="",
                                 datastore=""))
        except Exception as exc:  # noqa: BLE001 - reported, the rest still goes
            left.append(f"VM {state.name}: {first_line(exc)}")
    if state.mounted:
        try:
            InstantRecovery(hv).unmount_nfs(state.host, state.datastore)
        except Exception as exc:  # noqa: BLE001
            left.append(f"datastore {state.datastore}: {first_line(exc)}")
    try:
        publish_serve.stop(Path(state.mount), state.pid)
    except Exception as exc:  # noqa: BLE001
        left.append(f"published version at {state.mount}: {first_line(exc)}")
    if not left:
        shutil.rmtree(state.overlay, ignore_errors=True)
        shutil.rmtree(state.mount, ignore_errors=True)
        state_path(state.name).unlink(missing_ok=True)
    return left

