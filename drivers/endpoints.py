"""What a driver needs to know of the endpoint it talks to.

The data-centre file (dpflow.config) describes endpoints with secrets as references; a
driver only reads these attributes and gets the resolved password separately. Declared
as Protocols so the drivers depend on no configuration code: any object with these
attributes (the config models, a test's own) will do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class VCenterEndpoint(Protocol):
    """A vCenter or a standalone ESX host."""

    @property
    def name(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def user(self) -> str: ...
    @property
    def ca_file(self) -> Path | None: ...
    @property
    def datacenter(self) -> str: ...
    @property
    def connect_timeout_s(self) -> float:
        """TCP, TLS and login."""
        ...
    @property
    def call_timeout_s(self) -> float:
        """One SOAP exchange once connected."""
        ...
    @property
    def task_timeout_s(self) -> float:
        """One vSphere task, from its start to its end state."""
        ...
    @property
    def hunt_s(self) -> float:
        """How long to look on vCenter for what a call whose answer was lost did."""
        ...


class ArrayEndpoint(Protocol):
    """An SMI-S provider in front of an array."""

    @property
    def name(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def user(self) -> str: ...
    @property
    def ca_file(self) -> Path | None: ...
    @property
    def namespace(self) -> str: ...
    @property
    def timeout_s(self) -> float: ...
