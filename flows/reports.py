"""Reports kept as Prefect artifacts, so the UI shows what a run proved."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact


@flow(name="publish-report")
def publish_report(markdown: str, key: str, description: str = "") -> None:
    create_markdown_artifact(markdown=markdown, key=key, description=description)
