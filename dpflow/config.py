"""The data-centre file: one YAML document, validated by pydantic before anything runs.

Unknown keys are refused (a typo in a backup policy must not pass silently) and every
error becomes one line naming the key, so an administrator can fix it without reading
a traceback. Secrets never appear here: only references to an environment variable or a
Prefect Secret block, resolved at the moment of use.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from dpflow.errors import UserError
from dpflow.sites import DrGroupSpec, Site, check_sites


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(Strict):
    """Where a secret lives: exactly one of an environment variable or a Prefect Secret block."""

    env: str | None = None
    prefect_secret: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SecretRef:
        if (self.env is None) == (self.prefect_secret is None):
            raise ValueError("give exactly one of 'env' or 'prefect_secret'")
        return self

    def resolve(self) -> str:
        if self.env is not None:
            value = os.environ.get(self.env)
            if not value:
                raise UserError(
                    f"secret not set: environment variable {self.env} is empty; "
                    f"export it or point the config at a Prefect Secret block"
                )
            return value
        from prefect.blocks.system import Secret

        try:
            assert self.prefect_secret is not None  # _one_source: env or prefect_secret
            block: Any = Secret.load(self.prefect_secret)
            return str(block.get())
        except ValueError as exc:
            raise UserError(
                f"secret not found: Prefect Secret block '{self.prefect_secret}' does not "
                f"exist; create it in the Prefect UI or with `prefect block create secret`"
            ) from exc


class Endpoint(Strict):
    """A management endpoint reached over TLS with a user and a referenced password."""

    name: str
    host: str
    user: str
    password: SecretRef
    ca_file: Path | None = Field(
        None, description="CA bundle that signed the endpoint's certificate (verification is on)"
    )


class VCenter(Endpoint):
    """A vCenter or a standalone ESX host: both speak the same SOAP API."""

    port: int = 443
    datacenter: str = "DC0"
    connect_timeout_s: float = Field(20.0, gt=0, description="TCP, TLS and login")
    call_timeout_s: float = Field(120.0, gt=0, description="one SOAP exchange, once connected")
    task_timeout_s: float = Field(
        4 * 3600.0, gt=0,
        description="one vSphere task (snapshot, removal, VM creation) from start to end")
    hunt_s: float = Field(
        60.0, gt=0, description="how long to look on vCenter for the outcome of a call whose "
        "answer was lost (client timeout, dropped connection) before calling again")
    work_pool: str | None = Field(
        None, description="the Prefect work pool whose process workers back up this "
        "vCenter's VMs (one pool per site, e.g. 'site A proxies'); none: the process "
        "running backup-vms backs them up itself")


class SnapshotPolicy(Strict):
    quiesce: Literal["require", "prefer", "never"] = Field(
        "prefer",
        description="require: fail if the guest cannot quiesce; prefer: retry, then fall back "
        "to a crash-consistent snapshot, recorded in the version; never: no quiescing",
    )
    quiesce_attempts: int = Field(2, ge=1, le=10)
    delta_reserve_percent: float = Field(
        10.0, ge=0, le=100,
        description="room the datastore must have for the snapshot delta, as %% of disk size",
    )


class ChangeTracking(Strict):
    """VMware Changed Block Tracking: read only what changed, and check the answer."""

    enabled: bool = True
    verify_samples: int = Field(
        8, ge=0, le=100_000,
        description="unchanged chunks re-read at random per incremental disk and compared "
        "with the previous version; a difference means the CBT answer is wrong → full read")


class Store(Strict):
    """A 'file library' on disk: deduplicating, compressed chunks."""

    name: str
    path: Path
    chunk_size_kib: int = Field(
        64, ge=4, le=65536,
        description="fixed, disk-aligned image chunk; 64 KiB matches the CBT block, so an "
        "incremental stores only what changed")
    compression_level: int = Field(3, ge=-5, le=19)
    pack_size_mib: int = Field(32, ge=1, le=1024, description="target size of pack files")
    key: SecretRef | None = Field(
        None, description="32-byte key (hex or base64) that encrypts the store; None = plain")

    @property
    def chunk_size(self) -> int:
        return self.chunk_size_kib << 10
    min_free_percent_of_disk: float = Field(
        100.0, ge=0,
        description="skip a VM unless the store has this %% of its provisioned size free",
    )


class Proxy(Strict):
    """The backup host that reads snapshot disks (the seed's VCB proxy)."""

    name: str = "local"
    read_streams: int = Field(2, ge=1, le=32, description="disk ranges read at once; the "
                              "measured best on 2 cores is 2 (bench/README.md)")
    workers: int = Field(2, ge=1, le=64)
    transports: list[Literal["direct", "network"]] = Field(
        ["direct", "network"], min_length=1,
        description="how snapshot disks are read and restored disks written, tried in "
        "order: direct = the datastore's files straight from `datastores` (SAN or Direct "
        "NFS); network = HTTPS through the host. A disk whose datastore is not visible "
        "falls through to the next; the version records which one was used")
    datastores: dict[str, Path] = Field(
        {}, description="datastore name → the directory where this proxy sees it (NFS "
        "export mounted, or the SAN LUN's file system); only these can go direct")


class Array(Endpoint):
    """A disk array driven through its SMI-S provider (an EVA's Command View, ...)."""

    driver: Literal["smis"] = "smis"
    port: int = 5989
    namespace: str = "root/eva"
    timeout_s: float = Field(30.0, gt=0, description="one SMI-S request")
    job_deadline_s: float = Field(600.0, gt=0, description="how long an array job may run")
    backup_host: str = Field(description="the array's name for the backup host that replicas "
                             "are presented to")
    pool: str | None = Field(None, description="disk group for replicas (default: the source's)")
    replica_kind: Literal["snapshot", "vsnap", "snapclone", "mirrorclone"] = "snapclone"
    keep: int = Field(3, ge=1, le=64, description="replica sets kept per LUN group (rotation)")
    policy: Literal["strict", "loose"] = Field(
        "strict", description="strict: fail if the kind cannot be made; loose: fall back to a "
        "cheaper kind when the array lacks space, recorded in the version")
    san: Literal["block", "https"] = Field(
        "block", description="how the backup host reads a presented LUN: block (its device "
        "under san_device_dir) or https (the array's host data path, as the EVA simulator's)")
    san_device_dir: str = "/dev/disk/by-id"

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"


class Database(Strict):
    """An Oracle database protected by Zero Downtime Backup on array replicas."""

    name: str = Field(description="the database name (v$database.name)")
    dsn: str = Field(description="Oracle Net address, e.g. 'dbhost:1521/ORCL'")
    user: str = "sys"
    password: SecretRef
    connect: str = Field("oracledb:connect", description="the connection factory, "
                         "'module:callable' (python-oracledb's by default)")
    connect_timeout_s: float = Field(15.0, gt=0, description="outer deadline of a connect")
    array: str | None = Field(None, description="the array holding its LUNs (default: first)")
    vm: str | None = Field(None, description="the VM running it: its RDM disks are checked")
    replica_kind: Literal["snapshot", "vsnap", "snapclone", "mirrorclone"] | None = None
    keep: int | None = Field(None, ge=1, le=64)
    include_log_luns: bool = Field(False, description="replicate control file / online redo "
                                   "LUNs when they share LUNs with datafiles")
    backup_dir: str = Field("/u01/app/oracle/dpflow", description="directory on the database "
                            "host where the backup control file is written")


class Limits(Strict):
    """How many VM backups may run at once, per backup proxy, per datastore and per ESX
    host: Prefect global concurrency limits on the server, so they hold across workers."""

    per_proxy: int = Field(4, ge=1, le=256, description="VM backups one proxy runs at once")
    per_datastore: int = Field(2, ge=1, le=256,
                               description="snapshots taken and read on one datastore at once")
    per_host: int = Field(2, ge=1, le=256, description="VM backups of one ESX host at once")


class VmChecks(Strict):
    """What a restore test of one VM checks beyond the built-in checks."""

    files: dict[str, str | None] = Field(
        {}, description="guest path (e.g. /etc/hostname or d0p1:/etc/fstab) → its SHA-256 in "
        "hex, or null when only its presence is checked; read from the restored disk")
    probes: list[str] = Field(
        [], description="application probes, 'kind:argument': built in guest-file:/path (the "
        "file seen by the running guest, through guest operations); more kinds from "
        "packages registering entry points in the group 'dpflow.probes'")

    @field_validator("files")
    @classmethod
    def _digests(cls, v: dict[str, str | None]) -> dict[str, str | None]:
        for path, digest in v.items():
            if digest is not None and not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise ValueError(f"files: {path}: give a SHA-256 as 64 lower-case hex "
                                 f"characters, or null")
        return v

    @field_validator("probes")
    @classmethod
    def _probes(cls, v: list[str]) -> list[str]:
        for p in v:
            if ":" not in p:
                raise ValueError(f"probe {p!r}: write it as kind:argument, e.g. "
                                 f"guest-file:/etc/hostname")
        return v


class RestoreTests(Strict):
    """Restore tests (`restore_tests:`): where a version under test boots (an isolated
    port group on one ESX host), how long its guest may take to report a heartbeat, what
    is checked per VM, and the key its proofs are signed with (resolved only to sign)."""

    network: str = Field("dpflow-isolated", description="port group the test VM's one NIC "
                         "joins; made on a vSwitch without uplinks if missing")
    switch: str = Field("dpflow-lab", description="vSwitch (no uplinks) for that port group")
    host: str | None = Field(None, description="ESX host of the lab (default: the first "
                             "host of the first cluster)")
    heartbeat_timeout_s: float = Field(120.0, gt=0, le=3600)
    max_vms: int = Field(4, ge=1, le=1000, description="most VMs one restore-test run takes")
    proof_key: SecretRef = SecretRef(env="DPFLOW_PROOF_KEY")
    public_key: str | None = Field(None, description="the proofs' verification key (hex), "
                                   "for verifiers without the signing secret")
    guest_user: str = "root"
    guest_password: SecretRef | None = None
    checks: dict[str, VmChecks] = {}

    def for_vm(self, vm: str) -> VmChecks:
        return self.checks.get(vm, VmChecks())


class DataCentre(Strict):
    vcenters: list[VCenter] = []
    stores: list[Store] = Field(min_length=1)
    proxies: list[Proxy] = [Proxy()]
    snapshot: SnapshotPolicy = SnapshotPolicy()
    change_tracking: ChangeTracking = ChangeTracking()
    catalog_url: str = "sqlite:///catalog.db"
    arrays: list[Array] = []
    databases: list[Database] = []
    sites: list[Site] = []
    dr_groups: list[DrGroupSpec] = []
    limits: Limits = Limits()
    restore_tests: RestoreTests = RestoreTests()

    @model_validator(mode="after")
    def _sites(self) -> DataCentre:
        check_sites(self.sites, self.dr_groups, {a.name for a in self.arrays},
                    {v.name for v in self.vcenters})
        return self

    def site(self, name: str) -> Site:
        for s in self.sites:
            if s.name == name:
                return s
        known = ", ".join(s.name for s in self.sites) or "none"
        raise UserError(f"unknown site '{name}': the config defines {known} (add 'sites:')")

    @model_validator(mode="after")
    def _unique_names(self) -> DataCentre:
        if not self.vcenters and not self.arrays:
            raise ValueError("give at least one of 'vcenters' or 'arrays'")
        for what, items in (("vcenter", self.vcenters), ("store", self.stores),
                            ("array", self.arrays)):
            names = [i.name for i in items]
            dup = {n for n in names if names.count(n) > 1}
            if dup:
                raise ValueError(f"duplicate {what} name(s): {', '.join(sorted(dup))}")
        return self

    def store(self, name: str | None = None) -> Store:
        if name is None:
            return self.stores[0]
        for s in self.stores:
            if s.name == name:
                return s
        known = ", ".join(s.name for s in self.stores)
        raise UserError(f"unknown store '{name}': the config defines {known}")

    def array(self, name: str | None = None) -> Array:
        if not self.arrays:
            raise UserError("the config defines no arrays: add an 'arrays:' entry "
                            "(docs/config.md)")
        if name is None:
            return self.arrays[0]
        for a in self.arrays:
            if a.name == name:
                return a
        known = ", ".join(a.name for a in self.arrays)
        raise UserError(f"unknown array '{name}': the config defines {known}")

    def database(self, name: str) -> Database:
        for d in self.databases:
            if d.name.upper() == name.upper():
                return d
        known = ", ".join(d.name for d in self.databases) or "no databases"
        raise UserError(f"unknown database '{name}': the config defines {known} "
                        f"(add it under 'databases:')")


def _first_error_line(path: Path | str, exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key (check its spelling against docs/config.md)"
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"bad config {path}: {where}: {msg}{more}"


def load(path: Path) -> DataCentre:
    """Read and validate the data-centre file; relative paths are relative to the file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise UserError(f"cannot read config {path}: {exc.strerror}; pass --config FILE") from exc
    return parse(text, str(path), path.parent.resolve())


def parse(text: str, source: str, base: Path) -> DataCentre:
    """Validate a data-centre document read from `source` (a file, a Prefect block);
    relative paths in it are taken relative to `base`."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        kind = exc.__class__.__name__
        raise UserError(f"bad config {source}:{where}: not valid YAML ({kind})") from exc
    if not isinstance(raw, dict):
        raise UserError(f"bad config {source}: expected a mapping with 'vcenters' and 'stores'")
    try:
        dc = DataCentre.model_validate(raw)
    except ValidationError as exc:
        raise UserError(_first_error_line(source, exc)) from exc
    dc = _anchor_paths(dc, base)
    for ep in [*dc.vcenters, *dc.arrays]:
        if ep.ca_file is not None:
            _check_ca_file(source, ep.name, ep.ca_file)
    _check_catalog_url(source, dc.catalog_url)
    return dc


def _check_ca_file(config: str, endpoint: str, ca: Path) -> None:
    """A CA bundle that is missing or not PEM fails here, not as a TLS traceback later."""
    try:
        head = ca.read_bytes()[:1 << 20]
    except OSError as exc:
        raise UserError(f"bad config {config}: {endpoint}: ca_file {ca}: {exc.strerror}; "
                        f"point it at the PEM bundle of the CA that signed the endpoint") from exc
    if b"-----BEGIN CERTIFICATE-----" not in head:
        raise UserError(f"bad config {config}: {endpoint}: ca_file {ca} holds no PEM "
                        f"certificate (-----BEGIN CERTIFICATE-----); export the CA as PEM")


def _check_catalog_url(config: str, url: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(url)
    except ArgumentError as exc:
        raise UserError(f"bad config {config}: catalog_url '{url}' is not a database URL "
                        f"(e.g. sqlite:///catalog.db or postgresql+psycopg://user@host/db)"
                        ) from exc


def _anchor_paths(dc: DataCentre, base: Path) -> DataCentre:
    stores = [s.model_copy(update={"path": base / s.path}) for s in dc.stores]
    vcs = [
        v.model_copy(update={"ca_file": base / v.ca_file}) if v.ca_file else v for v in dc.vcenters
    ]
    arrays = [
        a.model_copy(update={"ca_file": base / a.ca_file}) if a.ca_file else a for a in dc.arrays
    ]
    proxies = [p.model_copy(update={"datastores": {k: base / v for k, v in p.datastores.items()}})
               for p in dc.proxies]
    url = dc.catalog_url
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        url = f"sqlite:///{base / url.removeprefix('sqlite:///')}"
    return dc.model_copy(update={"stores": stores, "vcenters": vcs, "arrays": arrays,
                                 "proxies": proxies, "catalog_url": url})
