"""A restore started from the real Prefect UI, in headless Chromium (Debian's package,
driven by Playwright): open the restore-vm deployment's run form, fill it, submit,
answer the paused run's restore-point question with an older version, and see the run
complete and the restored VM hold that version's bytes. Screenshots of each step are
kept under $DPFLOW_TEST_ARTIFACTS (default: test-artifacts/) as the test's record.

The classic UI is driven (its routes are pinned below); fields are found by their label
text, buttons and options by ARIA role. Its select opens from the keyboard (Space), not
from a synthetic click.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from dpflow import datacentre
from simulators.guest_disks import MiB
from tests.integration.served import Served, child_env, poll, runs_of, unique, write_dc
from tests.integration.test_vm_image import disk_bytes

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]


def artifacts_dir() -> Path:
    d = Path(os.environ.get("DPFLOW_TEST_ARTIFACTS", "test-artifacts")) / "browser"
    d.mkdir(parents=True, exist_ok=True)
    return d


def test_restore_vm_from_the_prefect_ui(vcsim, tmp_path, monkeypatch):
    from playwright.sync_api import sync_playwright

    from flows.vm_image import backup_vm_image
    from tests.integration.served import api_url

    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: ./dev setup installs it"
    name = unique("dc")
    dc_file = write_dc(tmp_path / "dc.yaml", vcsim)
    monkeypatch.setenv("DPFLOW_TEST_VC_PASSWORD", vcsim.password)
    monkeypatch.setenv("DPFLOW_TEST_STORE_KEY", "ab" * 32)
    datacentre.register(dc_file, name)
    vm = unique("ui")
    vcsim.create_vm(vm, [4 * MiB])
    old = bytes([7]) * (4 * MiB)
    vcsim.seed_disk(vm, 0, old)
    v_old = backup_vm_image(name, vm).version_id
    vcsim.seed_disk(vm, 0, bytes([9]) * (4 * MiB))
    backup_vm_image(name, vm)

    served = Served(["--dc", name, "--vms", vm], child_env(vcsim), tmp_path / "serve.log")
    shots = artifacts_dir()
    try:
        dep = served.wait_deployment("restore-vm/restore-vm", name)
        ui = api_url().removesuffix("/api")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                        args=["--no-sandbox", "--disable-dev-shm-usage",
                                              "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            page.set_default_timeout(60_000)
            page.goto(f"{ui}/deployments/deployment/{dep.id}/run", wait_until="networkidle")
            field(page, "vm").fill(vm)
            field(page, "restore_as").fill(f"{vm}-ui")
            page.screenshot(path=shots / "1-run-form.png", full_page=True)
            page.get_by_role("button", name="Submit").click()

            run = poll(lambda: next((r for r in runs_of(dep.id)
                                     if r.parameters.get("vm") == vm), None), 60)
            assert run.parameters["vm"] == vm and run.parameters["dc"] == name
            run = poll(lambda: _state(run.id, served), 240, every_s=2)
            page.goto(f"{ui}/runs/flow-run/{run.id}", wait_until="networkidle")
            page.get_by_role("button", name="Resume").click()
            dialog = page.get_by_role("dialog")
            select = dialog.locator(".p-select-button__control")
            select.focus()
            select.press(" ")
            page.get_by_role("option", name=re.compile(re.escape(v_old))).click()
            page.screenshot(path=shots / "2-restore-point.png")
            dialog.get_by_role("button", name="Submit").click()
            dialog.wait_for(state="hidden")

            done = poll(lambda: _finished(run.id, served), 240, every_s=2)
            page.goto(f"{ui}/runs/flow-run/{run.id}", wait_until="networkidle")
            page.get_by_text("Completed").first.wait_for()
            page.screenshot(path=shots / "3-completed.png", full_page=True)
            browser.close()
        assert done.state.is_completed(), done.state.message
    finally:
        served.stop()
    assert disk_bytes(vcsim, f"{vm}-ui", 0, len(old)) == old  # the version chosen, verified


def field(page, name: str):
    """The input of a parameter, found by its label text (the form's labels point at no
    element, so Playwright's get_by_label cannot follow them)."""
    label = page.locator(".schema-form-property__label",
                         has_text=re.compile(rf"^{name}( \(Optional\))?$"))
    return page.locator(".schema-form-property", has=label).locator("textarea, input").first


def _state(run_id, served):
    from prefect.client.orchestration import get_client

    served.alive()
    with get_client(sync_client=True) as c:
        r = c.read_flow_run(run_id)
    assert not (r.state and r.state.is_final()), f"run ended {r.state.name}: {r.state.message}"
    return r if r.state and r.state.is_paused() else None


def _finished(run_id, served):
    from prefect.client.orchestration import get_client

    served.alive()
    with get_client(sync_client=True) as c:
        r = c.read_flow_run(run_id)
    print("restore run state:", r.state.name if r.state else None)  # shown on a timeout
    return r if r.state and r.state.is_final() else None
