"""The bad-input campaign: every mistake an administrator makes through the real CLI gets
one line (what, why, how to fix), exit code 2, and changes nothing anywhere: no snapshot,
no VM, no session or version in the catalog, no byte in the store.

The table holds the mistakes; each case edits a copy of the data-centre file and/or the
environment and runs the `dpflow` command (the Typer app the console script runs, in this
process: 44 fresh interpreters would cost minutes; tests/integration/test_cli.py runs the
same kind of mistakes in their own processes). The campaign then checks that the data
centre looks exactly as before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from simulators.guest_disks import MiB

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]

VM, OTHER, RUNNING, OFF = "bi-src", "bi-other", "bi-running", "bi-off"


@dataclass
class Mistake:
    name: str
    args: list[str]
    words: str  # what the one line must say
    edit: Callable[[dict[str, Any], Path], None] | None = None
    env: dict[str, str | None] = field(default_factory=dict)


def _set(path: str, value: Any) -> Callable[[dict[str, Any], Path], None]:
    def go(cfg: dict[str, Any], _dir: Path) -> None:
        *parents, last = path.split(".")
        node: Any = cfg
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        node[last] = value
    return go


def _file(content: bytes, key: str) -> Callable[[dict[str, Any], Path], None]:
    def go(cfg: dict[str, Any], d: Path) -> None:
        f = d / "bad-ca.pem"
        f.write_bytes(content)
        _set(key, str(f))(cfg, d)
    return go


def mistakes(tmp: Path, other_version: str) -> list[Mistake]:
    closed_port = 9  # discard: nothing listens there on loopback
    M = Mistake
    return [
        # the data-centre file
        M("unknown key", ["backup", "vm", VM], "unknown key", _set("retention_dayz", 7)),
        M("unknown nested key", ["backup", "vm", VM], "unknown key",
          _set("snapshot.quiesse", "prefer")),
        M("bad quiesce choice", ["backup", "vm", VM], "snapshot.quiesce",
          _set("snapshot.quiesce", "sometimes")),
        M("chunk size too small", ["backup", "vm", VM], "chunk_size_kib",
          _set("stores.0.chunk_size_kib", 1)),
        M("pack size zero", ["backup", "vm", VM], "pack_size_mib",
          _set("stores.0.pack_size_mib", 0)),
        M("no stores", ["backup", "vm", VM], "stores", _set("stores", [])),
        M("duplicate store names", ["backup", "vm", VM], "duplicate store",
          lambda c, _d: c["stores"].append(dict(c["stores"][0]))),
        M("secret with two sources", ["backup", "vm", VM], "exactly one",
          _set("vcenters.0.password", {"env": "X", "prefect_secret": "y"})),
        M("missing config file", ["backup", "vm", VM, "-c", str(tmp / "nope.yaml")],
          "cannot read config"),
        M("ca_file missing", ["backup", "vm", VM], "ca_file",
          _set("vcenters.0.ca_file", str(tmp / "no-such-ca.pem"))),
        M("ca_file not PEM", ["backup", "vm", VM], "no PEM certificate",
          _file(b"this is not a certificate\n", "vcenters.0.ca_file")),
        M("catalog_url not a URL", ["versions"], "not a database URL",
          _set("catalog_url", "::not a url::")),
        M("catalog_url unknown database", ["versions"], "cannot open the catalog",
          _set("catalog_url", "nosuchdb://host/db")),
        M("catalog not writable", ["versions"], "cannot open the catalog",
          _set("catalog_url", "sqlite:////proc/dpflow/catalog.db")),
        M("unknown datacenter", ["backup", "vm", VM], "no datacenter 'DC9'",
          _set("vcenters.0.datacenter", "DC9")),
        M("vCenter unreachable", ["backup", "vm", VM], "unreachable",
          _set("vcenters.0.port", closed_port)),
        M("wrong vCenter password", ["backup", "vm", VM], "wrong user or password",
          env={"DPFLOW_TEST_VC_PASSWORD": "wrong"}),
        M("vCenter password unset", ["backup", "vm", VM], "DPFLOW_TEST_VC_PASSWORD is empty",
          env={"DPFLOW_TEST_VC_PASSWORD": None}),
        M("untrusted certificate", ["backup", "vm", VM], "not trusted",
          _set("vcenters.0.ca_file", "OTHER_CA")),
        M("wrong store key", ["backup", "vm", VM], "wrong key",
          env={"DPFLOW_TEST_STORE_KEY": "cd" * 32}),
        M("store key unset", ["backup", "vm", VM], "DPFLOW_TEST_STORE_KEY is empty",
          env={"DPFLOW_TEST_STORE_KEY": None}),
        M("store key malformed", ["backup", "vm", VM], "store key must be 32 bytes",
          env={"DPFLOW_TEST_STORE_KEY": "not-a-key"}),
        M("prefect secret block missing", ["backup", "vm", VM], "Prefect Secret block",
          _set("vcenters.0.password", {"prefect_secret": "dpflow-no-such-block"})),
        # image backup and restore
        M("unknown VM", ["backup", "vm", "bi-no-such-vm"], "unknown VM 'bi-no-such-vm'"),
        M("one unknown VM of two", ["backup", "vm", VM, "bi-typo"], "unknown VM 'bi-typo'"),
        M("unknown store", ["backup", "vm", VM, "--store", "tape9"], "tape9"),
        M("unknown version", ["restore", "vm", VM, "--version", "nope"], "unknown version"),
        M("another VM's version", ["restore", "vm", VM, "--version", other_version],
          f"belongs to VM {OTHER}"),
        M("never backed up", ["restore", "vm", RUNNING, "--as", "bi-new"], "no version"),
        M("restore over a running VM", ["restore", "vm", VM, "--as", RUNNING, "--force"],
          "poweredOn"),
        M("restore over an existing VM", ["restore", "vm", VM, "--as", OFF], "already exists"),
        # file level
        M("bad file level", ["backup", "files", VM, "--level", "weekly"], "weekly"),
        M("incremental with no full", ["backup", "files", VM, "--level", "incr"], "full"),
        M("find in an image version", ["find", VM, "*.conf", "--version", other_version],
          "not a file-level version"),
        M("bad conflict policy", ["restore", "files", VM, "/etc", "--to", str(tmp / "out"),
                                  "--conflict", "merge"], "unknown conflict policy"),
        M("no restore target", ["restore", "files", VM, "/etc"], "exactly one of --to"),
        M("two restore targets", ["restore", "files", VM, "/etc", "--to", str(tmp / "o"),
                                  "--into-guest", "/tmp"], "exactly one of --to"),
        M("no file-level version", ["restore", "files", VM, "/etc", "--to", str(tmp / "o2")],
          "no file-level version"),
        # media
        M("forget with no rule", ["forget"], "no keep rule"),
        M("protect unknown version", ["protect", "nope", "--days", "3"], "unknown version"),
        M("verify unknown store", ["verify", "--store", "tape9"], "tape9"),
        M("prune unknown store", ["prune", "--store", "tape9"], "tape9"),
        # arrays (none configured here)
        M("replicate with no array", ["replicate", "db", "data"], "defines no arrays"),
        M("restore LUNs of an unknown group", ["restore", "luns", "nogroup"], "nogroup"),
    ]


def cli(args: list[str], config: Path, env: dict[str, str | None],
        monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    from typer.testing import CliRunner

    from dpflow_cli.main import app

    with monkeypatch.context() as m:
        m.setenv("COLUMNS", "200")
        for k, v in env.items():
            if v is None:
                m.delenv(k, raising=False)
            else:
                m.setenv(k, v)
        if "-c" not in args:
            args = [*args, "-c", str(config)]
        r = CliRunner().invoke(app, args, catch_exceptions=True)
    out = r.output  # what the terminal shows: stdout and stderr interleaved
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        import traceback

        out += "Traceback:\n" + "".join(traceback.format_exception(r.exception))
    return r.exit_code, out


def world(vcsim: Any, config: Path) -> dict[str, Any]:
    """Everything a mistake must leave as it was."""
    from sqlalchemy import func, select

    from dpflow.catalog import SessionRow, VersionRow
    from dpflow.environment import environment

    store = config.parent / "store"
    files = sorted((str(p.relative_to(store)), p.stat().st_size) for p in store.rglob("*")
                   if p.is_file() and not p.name.endswith(("-wal", "-shm")))
    cat = environment(config).catalog()
    with cat.session() as db:
        sessions = db.scalar(select(func.count()).select_from(SessionRow))
        versions = db.scalar(select(func.count()).select_from(VersionRow))
    vms = {n: (vcsim.vm_exists(n), vcsim.vm_exists(n) and vcsim.snapshot_count(n))
           for n in (VM, OTHER, RUNNING, OFF, "bi-new")}
    return {"store": files, "sessions": sessions, "versions": versions, "vms": vms}


def test_forty_mistakes_one_line_each_nothing_changed(vcsim, dc_config: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.vm_image import backup_vm_image
    from simulators.tls import ensure_certs

    for name in (VM, OTHER, OFF):
        vcsim.create_vm(name, [2 * MiB])
    vcsim.create_vm(RUNNING, [2 * MiB], power_on=True)
    backup_vm_image(str(dc_config), VM)
    other = backup_vm_image(str(dc_config), OTHER)
    other_ca = ensure_certs(tmp_path / "other-ca").ca_file
    before = world(vcsim, dc_config)
    table = mistakes(tmp_path, str(other.version_id))
    assert len(table) >= 40

    def one(i: int, m: Mistake) -> tuple[Mistake, int, str]:
        cfg = dc_config
        if m.edit is not None:
            d = tmp_path / f"case{i}"
            d.mkdir()
            raw = yaml.safe_load(dc_config.read_text())
            raw["stores"][0]["path"] = str(dc_config.parent / "store")
            raw["catalog_url"] = f"sqlite:///{dc_config.parent / 'catalog.db'}"
            m.edit(raw, d)
            text = yaml.safe_dump(raw).replace("OTHER_CA", str(other_ca))
            cfg = d / "dpflow.yaml"
            cfg.write_text(text)
        code, out = cli(m.args, cfg, m.env, monkeypatch)
        return m, code, out

    results = [one(i, m) for i, m in enumerate(table)]
    bad = []
    for m, code, out in results:
        lines = [ln for ln in out.splitlines() if ln.strip()]
        if code != 2 or "Traceback" in out or len(lines) != 1 or m.words not in lines[0]:
            bad.append(f"{m.name}: exit {code}: {out.strip()[:400]}")
    assert not bad, f"{len(bad)} of {len(table)} mistakes not handled:\n" + "\n".join(bad)
    assert world(vcsim, dc_config) == before
