"""`python -m dpflow_cli`: the same CLI as the `dpflow` console script."""

from dpflow_cli import main  # noqa: F401 - registers every command
from dpflow_cli.app import app

app()
