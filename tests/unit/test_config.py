"""The data-centre file: every mistake is one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from dpflow import config
from dpflow.errors import UserError

GOOD = """
vcenters:
  - name: vc1
    host: 127.0.0.1
    port: 8989
    user: admin
    password: {env: DPFLOW_TEST_PW}
    ca_file: ca.pem
stores:
  - name: lib
    path: store
"""


def write(tmp_path: Path, text: str) -> Path:
    from simulators.tls import ensure_certs

    ca = ensure_certs(tmp_path / "tls").ca_file  # the config checks its CA is PEM
    (tmp_path / "ca.pem").write_bytes(ca.read_bytes())
    p = tmp_path / "dc.yaml"
    p.write_text(text)
    return p


def test_good_config_anchors_paths(tmp_path: Path) -> None:
    dc = config.load(write(tmp_path, GOOD))
    assert dc.stores[0].path == tmp_path.resolve() / "store"
    assert dc.vcenters[0].ca_file == tmp_path.resolve() / "ca.pem"
    assert dc.catalog_url == f"sqlite:///{tmp_path.resolve() / 'catalog.db'}"


@pytest.mark.parametrize("text, words", [
    (GOOD + "retention: 3\n", "retention: unknown key"),
    (GOOD.replace("port: 8989", "prot: 8989"), "vcenters.0.prot: unknown key"),
    ("vcenters: [\n", "not valid YAML"),
    ("- a\n- b\n", "expected a mapping"),
    (GOOD.replace("{env: DPFLOW_TEST_PW}", "{env: A, prefect_secret: b}"), "exactly one"),
])
def test_bad_config_is_one_line(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(UserError) as exc:
        config.load(write(tmp_path, text))
    assert words in str(exc.value)
    assert "\n" not in str(exc.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot read config"):
        config.load(tmp_path / "nope.yaml")


def test_secret_from_env_and_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dc = config.load(write(tmp_path, GOOD))
    monkeypatch.setenv("DPFLOW_TEST_PW", "s3cret")
    assert dc.vcenters[0].password.resolve() == "s3cret"
    monkeypatch.delenv("DPFLOW_TEST_PW")
    with pytest.raises(UserError, match="DPFLOW_TEST_PW is empty"):
        dc.vcenters[0].password.resolve()
