"""After a kill -9: the lock frees within the documented bound, and the next backup of the
same VM closes the dead session as aborted, removes its temporary pack and registration,
and reports them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from dpflow.environment import environment
from dpflow.locks import LEASE_BOUND_S, exclusive
from simulators.guest_disks import MiB
from tests.integration.test_vm_image import new_vm

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]

OWNER = """
import os, sys, time
from dpflow.environment import environment
from dpflow.locks import exclusive
from dpflow.store.maintenance import register_backup
cfg, vm = sys.argv[1:3]
env = environment(cfg)
with exclusive("vm", vm):
    sid = env.catalog().begin_session("backup-image", "vm", vm)
    store = env.store(create=True)
    register_backup(store, sid)
    data = os.urandom(200_000)
    store.put(store.chunk_id(data), data)  # a temporary pack, never sealed
    print(sid, flush=True)
    time.sleep(600)
"""


def test_a_killed_backup_is_cleaned_up_by_the_next_one(vcsim, dc_config, tmp_path):
    from prefect.settings import PREFECT_API_URL

    from flows.vm_image import backup_vm_image

    cfg = str(dc_config)
    vm, _ = new_vm(vcsim, tmp_path, [2 * MiB])
    owner = subprocess.Popen([sys.executable, "-c", OWNER, cfg, vm], stdout=subprocess.PIPE,
                             text=True,
                             env=dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value()))
    dead_session = owner.stdout.readline().strip()
    assert dead_session, "the owner process did not start its session"
    store = environment(cfg).store()
    (tmp_pack,) = store.tmp_dir.glob("*.pack.tmp")
    owner.send_signal(signal.SIGKILL)
    owner.wait()

    # the documented bound: the dead owner's lease expires and the lock is free again
    with exclusive("vm", vm, timeout_s=LEASE_BOUND_S):
        pass

    result = backup_vm_image(cfg, vm)
    assert result.status == "completed"
    row = environment(cfg).catalog().get_session(dead_session)
    assert row.status == "aborted" and "is gone" in row.message
    assert not tmp_pack.exists()
    assert not (store.locks_dir / f"{dead_session}.session").exists()
    assert any(dead_session in line and line.startswith("closed as aborted")
               for line in result.leftovers)
    assert any(tmp_pack.name in line for line in result.leftovers)
    assert any(f"{dead_session}.session" in line for line in result.leftovers)
