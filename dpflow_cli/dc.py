"""`dpflow dc register|list|show`: the data centre as Prefect configuration.

Registering saves the data-centre file, validated, as a Prefect block; deployments and
the Prefect UI then name the data centre instead of a file path. Every other command
keeps `-c FILE`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from dpflow_cli.app import DEFAULT_CONFIG, ConfigOpt, app, console, guard

dc_app = typer.Typer(help="Data centres registered on the Prefect server.",
                     no_args_is_help=True)
app.add_typer(dc_app, name="dc")


@dc_app.command("register")
def register(config: ConfigOpt = DEFAULT_CONFIG,
             name: Annotated[str, typer.Option(help="the data centre's name in Prefect")
                             ] = "default") -> None:
    """Validate the data-centre file and save it as a Prefect block (secrets stay
    references: env variables or Secret blocks)."""
    from dpflow import datacentre, prefect_server

    def go() -> None:
        from dpflow import config as cfg

        cfg.load(config)  # a bad file: one line, before the server is even started
        prefect_server.ensure_server()
        datacentre.register(config, name)
    guard(go)
    console.print(f"registered data centre [bold]{name}[/] from {config.resolve()}")


@dc_app.command("list")
def list_() -> None:
    """The registered data centres."""
    from dpflow import datacentre, prefect_server

    def go() -> list[str]:
        prefect_server.ensure_server()
        return datacentre.names()
    for n in guard(go):
        console.print(n)


@dc_app.command("show")
def show(name: Annotated[str, typer.Argument(help="a registered data centre")] = "default"
         ) -> None:
    """The document a registered data centre holds."""
    from dpflow import datacentre, prefect_server

    def go() -> str:
        prefect_server.ensure_server()
        source, text, base = datacentre.read(name)
        return f"# {source}, paths relative to {base}\n{text}"
    console.print(guard(go), highlight=False, markup=False)
