"""`python -m dpflow_cli`: the same CLI as the `dpflow` console script."""

from dpflow_cli.main import app

app()
