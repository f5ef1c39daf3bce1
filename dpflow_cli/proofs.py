"""`dpflow test-restore`, `dpflow proofs`, `dpflow proof verify|keygen`: restore tests and
their proofs."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from dpflow_cli.app import DEFAULT_CONFIG, ConfigOpt, app, console, err, guard, prepare

proof_app = typer.Typer(help="Restore proofs: verify one, make a signing key "
                        "(`dpflow proofs` lists them).",
                        no_args_is_help=True)
app.add_typer(proof_app, name="proof")
COLOURS = {"passed": "green", "failed": "red", "skipped": "yellow"}


@app.command("test-restore")
def restore_test(vms: Annotated[list[str], typer.Argument(help="VM names")],
                   version: Annotated[str | None, typer.Option(
                       help="version id (default: the latest; one VM only)")] = None,
                   config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Restore test: boot each VM's version in the isolated lab, check it, sign a proof."""
    if version and len(vms) > 1:
        guard(_refuse("--version names one version: give one VM with it"))
    cfg = prepare(config)

    def go() -> list[Any]:
        from dpflow.environment import environment
        from flows.restore_test import plan_test

        env = environment(cfg)
        if len(vms) > env.dc.restore_tests.max_vms:
            _refuse(f"{len(vms)} VMs asked, restore_tests.max_vms is "
                    f"{env.dc.restore_tests.max_vms}: split the list or raise the limit")()
        for vm in vms:  # key, version, probes: one line each, before anything is touched
            plan_test(env, vm, version)
        return [_one(cfg, vm, version) for vm in vms]
    rows = guard(go)
    failed = False
    for _proof_id, body, message in rows:
        if body is None:
            failed = True
            err.print(f"[bold red]failed:[/] {message}", highlight=False, soft_wrap=True)
            continue
        failed = failed or body.outcome != "passed"
        _show(body)
    if failed:
        raise typer.Exit(1)


def _refuse(message: str) -> Any:
    from dpflow.errors import UserError

    def fn() -> None:
        raise UserError(message)
    return fn


def _one(cfg: str, vm: str, version: str | None) -> tuple[str | None, Any, str]:
    """One VM's restore test; its proof read back from the catalog (also when it failed)."""
    import json
    import re

    from dpflow.catalog_proofs import proof
    from dpflow.environment import environment
    from dpflow.errors import first_line
    from dpflow.proofs import ProofBody
    from flows.restore_test import verify_restore as flow

    state = flow(cfg, vm, version, return_state=True)
    try:
        proof_id: str | None = state.result().proof_id
        message = ""
    except Exception as exc:  # noqa: BLE001 - a failed test names its proof
        message = first_line(exc)
        m = re.search(r"\(proof (\w+)\)$", message)
        proof_id = m.group(1) if m else None
    if proof_id is None:
        return None, None, message or f"restore test of {vm} failed before a proof was made"
    row = proof(environment(cfg).catalog(), proof_id)
    return proof_id, ProofBody.model_validate(json.loads(row.body)), message


def _show(body: Any) -> None:
    colour = COLOURS[body.outcome]
    console.print(f"[{colour}]{body.outcome}[/] restore test of {body.vm} version "
                  f"{body.version_id} as {body.test_vm} on {body.network}: proof "
                  f"{body.proof_id}", highlight=False)
    table = Table("check", "result", "detail")
    for c in body.checks:
        table.add_row(c.name, f"[{COLOURS[c.status]}]{c.status}[/]", c.detail)
    console.print(table)


@app.command("proofs")
def proofs_list(vm: Annotated[str | None, typer.Argument(help="only this VM")] = None,
               config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """The restore proofs in the catalog, oldest first (not verified: see `proof verify`)."""
    def go() -> Any:
        from dpflow.catalog_proofs import proofs
        from dpflow.environment import environment

        return proofs(environment(config).catalog(), vm)
    rows = guard(go)
    table = Table("proof", "VM", "version", "outcome", "when (UTC)", "key")
    for r in rows:
        table.add_row(r.id, r.vm, r.version_id, f"[{COLOURS.get(r.outcome, 'red')}]{r.outcome}[/]",
                      r.created.strftime("%Y-%m-%d %H:%M:%S"), r.key_id)
    console.print(table)


@proof_app.command("verify")
def proof_verify(proof_id: Annotated[str, typer.Argument(help="proof id (`dpflow proofs`)")],
                 read_data: Annotated[bool, typer.Option(
                     help="also read and re-hash every chunk of the version")] = False,
                 config: ConfigOpt = DEFAULT_CONFIG) -> None:
    """Check a proof's signature, and that its version and manifest still hold.
    Exit 0: valid; 1: invalid, no longer holding, or a failed test."""
    def go() -> Any:
        from dpflow.environment import environment
        from dpflow.proof_verify import verify_proof

        return verify_proof(environment(config), proof_id, read_data)
    v = guard(go)
    if v.ok:
        console.print(f"[green]valid:[/] {v.line}" + (f" ({'; '.join(v.notes)})"
                                                      if v.notes else ""), highlight=False,
                      soft_wrap=True)
        return
    err.print(f"[bold red]not proven:[/] {v.line}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@proof_app.command("keygen")
def proof_keygen() -> None:
    """Make an ed25519 proof signing key: the private part goes into a secret (never a
    file in the repository), the public part into restore_tests.public_key."""
    from dpflow.proofs import new_key

    private, public = new_key()
    typer.echo(f"private (keep secret, e.g. DPFLOW_PROOF_KEY or a Prefect Secret block): "
               f"{private}\npublic (restore_tests.public_key): {public}")
