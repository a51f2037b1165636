"""Hosts and virtual machines."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from haven.api.schemas.base import Strict

__all__ = ["HostOut", "HostIn", "HostAddedOut", "VmOut"]


class HostOut(BaseModel):
    id: str
    name: str
    region: str
    adapter: str
    adapter_uri: str = Field(description="The adapter's URI (folder:///path, qemu:///system …); a password in it is shown as ***.")
    last_seen: datetime | None
    agent: Literal["server", "remote"] = "server"
    agent_version: str | None = None
    shares: list[str] = Field(default_factory=list, description="The subscriptions the host is shared with (those the caller sees).")
    network: dict[str, Any] | None = Field(None, description="The host agent's last network report: its proxy settings (no secrets) "
                                                                "and its probe of each vault's storage (remote agents only).")


class HostIn(Strict):
    name: str = Field(min_length=1, max_length=63, description="The host's name (DNS-style).")
    region: str = Field(min_length=1, max_length=64)
    adapter: str = Field(default="folder:///var/lib/haven/vms", min_length=1, max_length=1024,
                         description="The hypervisor adapter the agent will use on that host (it reports its own when it starts).")
    shares: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(default_factory=list, max_length=100,
                              description="Subscriptions (names or ids) to share the host with; none: shared with none until 'haven host share'.")


class HostAddedOut(HostOut):
    agent_token: str = Field(description="The agent's credential: shown once; give it to 'haven agent --token-file'.")


class VmOut(BaseModel):
    id: str
    name: str
    host: str
    region: str
    power_state: str
    uuid: str | None
    disks: list[dict[str, Any]]
    guest_agent: dict[str, Any] | None
    last_seen: datetime
