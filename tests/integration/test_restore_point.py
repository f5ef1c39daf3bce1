"""The restore flows of the UI ask for the restore point at run time: the paused run
offers the versions in the catalog now, refuses an answer that is not one of them, and
restores exactly the version chosen, bit for bit."""

from __future__ import annotations

import contextvars
import threading

import pytest

from simulators.guest_disks import MiB
from tests.integration.served import poll, unique
from tests.integration.test_vm_image import disk_bytes

pytestmark = pytest.mark.usefixtures("prefect_server")


def paused_run(flow_name: str, vm: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    def find():
        with get_client(sync_client=True) as c:
            runs = c.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])))
        return next((r for r in runs if r.parameters.get("vm") == vm and r.state
                     and r.state.is_paused()), None)
    return find


def test_restore_vm_asks_for_the_restore_point(vcsim, dc_config):
    from prefect.client.orchestration import get_client
    from prefect.input.run_input import keyset_from_paused_state

    from dpflow.errors import UserError
    from flows.restores import restore_vm
    from flows.vm_image import backup_vm_image

    vm = unique("ask")
    vcsim.create_vm(vm, [4 * MiB])
    first = bytes([1]) * (4 * MiB)
    vcsim.seed_disk(vm, 0, first)
    v1 = backup_vm_image(str(dc_config), vm).version_id
    vcsim.seed_disk(vm, 0, bytes([2]) * (4 * MiB))
    v2 = backup_vm_image(str(dc_config), vm).version_id

    with pytest.raises(UserError, match="unknown version 'nope'"):
        restore_vm(vm, version="nope", dc=str(dc_config))

    out: dict = {}
    # in a copy of this context: the thread keeps the test server's settings (a bare
    # thread would start Prefect's own ephemeral server)
    t = threading.Thread(target=contextvars.copy_context().run, args=(lambda: out.update(
        r=restore_vm(vm, restore_as=f"{vm}-r", dc=str(dc_config))),))
    t.start()
    run = poll(paused_run("restore-vm", vm), 120)
    keyset = keyset_from_paused_state(run.state)
    with get_client(sync_client=True) as c:
        schema = c.read_flow_run_input(run.id, keyset["schema"])
        assert v1 in schema and v2 in schema  # the choices are today's versions
        labels = [s for s in _enum(schema) if v1 in s]
        refused = c.resume_flow_run(run.id, run_input={"restore_point": "yesterday"})
        assert refused.status.value != "ACCEPT"  # not one of the choices: still paused
        assert c.read_flow_run(run.id).state.is_paused()
        c.resume_flow_run(run.id, run_input={"restore_point": labels[0]})
    t.join(180)
    assert out["r"]["version_id"] == v1 and out["r"]["verified"]
    assert disk_bytes(vcsim, f"{vm}-r", 0, len(first)) == first


def _enum(schema_json: str) -> list[str]:
    import json

    def walk(node):
        if isinstance(node, dict):
            if "enum" in node:
                yield from node["enum"]
            for v in node.values():
                yield from walk(v)
        elif isinstance(node, list):
            for v in node:
                yield from walk(v)
    return list(walk(json.loads(schema_json)))
