"""The data centre registered as a Prefect block: loaded by name with the same paths as
from its file, an unknown name or a bad file refused in one line, nothing saved."""

from __future__ import annotations

import pytest

from dpflow import datacentre
from dpflow.errors import UserError
from tests.integration.served import unique

pytestmark = pytest.mark.usefixtures("prefect_server")

DOC = """
vcenters:
  - {name: vc1, host: 127.0.0.1, user: u, password: {prefect_secret: vc1-password}}
stores:
  - {name: lib, path: store}
limits: {per_proxy: 3}
"""


def test_register_then_load_by_name(tmp_path):
    f = tmp_path / "dc.yaml"
    f.write_text(DOC)
    name = unique("dc")
    datacentre.register(f, name)
    by_name, by_file = datacentre.load(name), datacentre.load(str(f))
    assert by_name == by_file
    assert by_name.stores[0].path == tmp_path / "store"  # relative to the registered file
    assert by_name.limits.per_proxy == 3
    assert by_name.vcenters[0].password.prefect_secret == "vc1-password"  # a reference only
    assert name in datacentre.names()


def test_unknown_name_and_bad_file_are_one_line(tmp_path):
    with pytest.raises(UserError, match="unknown data centre 'nowhere': register it"):
        datacentre.load("nowhere")
    bad = tmp_path / "bad.yaml"
    bad.write_text(DOC + "nightly: yes\n")
    name = unique("dc")
    with pytest.raises(UserError, match="unknown key"):
        datacentre.register(bad, name)
    assert name not in datacentre.names()  # nothing saved
    with pytest.raises(UserError, match="bad data-centre name"):
        datacentre.register(bad, "Not A Name")


def test_cli_registers_lists_and_refuses(tmp_path, monkeypatch):
    from prefect.settings import PREFECT_API_URL

    from tests.integration.test_cli import assert_one_line, run

    monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())
    f = tmp_path / "dc.yaml"
    f.write_text(DOC)
    name = unique("cli")
    code, out = run("dc", "register", "-c", str(f), "--name", name)
    assert code == 0 and f"registered data centre {name}" in out, out
    code, out = run("dc", "list")
    assert code == 0 and name in out.split(), out
    code, out = run("dc", "show", name)
    assert code == 0 and "prefect_secret: vc1-password" in out, out
    assert_one_line(*run("dc", "show", "nowhere"), "unknown data centre 'nowhere'")
    bad = tmp_path / "bad.yaml"
    bad.write_text(DOC + "nightly: yes\n")
    assert_one_line(*run("dc", "register", "-c", str(bad), "--name", unique("cli")),
                    "unknown key")
