"""`python -m dpflow`: the same CLI as the `dpflow` console script."""

from dpflow.cli import app

app()
