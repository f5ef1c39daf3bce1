"""dpflow.locks against the real Prefect server: a VM's lock and its backup slots are
one lease, a process's waiters queue in the process, and a limit the server lost is
made again."""

from __future__ import annotations

import contextvars
import threading
import time

import pytest

from tests.integration.served import unique

pytestmark = pytest.mark.usefixtures("prefect_server")


def _slots(name: str) -> int:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(name).active_slots


def test_a_lock_and_slots_are_held_together_and_given_back():
    from dpflow.locks import held, limit_name, lock_of

    vm, proxy = unique("lock-vm"), unique("lock-proxy")
    limits = lock_of("vm", vm) | {limit_name("proxy", proxy): 2}
    with held(limits) as names:
        assert sorted(names) == sorted(limits)
        assert [_slots(n) for n in sorted(limits)] == [1, 1]
    assert [_slots(n) for n in sorted(limits)] == [0, 0]


def test_a_second_holder_in_the_process_waits_for_the_first():
    from dpflow.locks import exclusive

    vm, order = unique("lock-wait"), []

    def second() -> None:
        with exclusive("vm", vm):
            order.append("second")

    with exclusive("vm", vm):
        t = threading.Thread(target=contextvars.copy_context().run, args=(second,))
        t.start()
        time.sleep(0.5)  # give the second holder time to (wrongly) get in
        order.append("first done")
    t.join(30)
    assert order == ["first done", "second"]


def test_a_limit_the_server_lost_is_made_again():
    from prefect.client.orchestration import get_client

    from dpflow.locks import exclusive, is_free, limit_name

    vm = unique("lock-lost")
    with exclusive("vm", vm):
        pass
    with get_client(sync_client=True) as client:  # as if the server's database was replaced
        client.delete_global_concurrency_limit_by_name(limit_name("vm", vm))
    with exclusive("vm", vm):
        assert not is_free("vm", vm)
    assert is_free("vm", vm)
