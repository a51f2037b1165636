"""Path and query parameters shared by the routes."""

from typing import Annotated

from fastapi import Path

Sub = Annotated[str, Path(min_length=1, max_length=64, description="Subscription name or id", examples=["default"])]
VaultName = Annotated[str, Path(min_length=1, max_length=100, description="Vault name", examples=["vault-local"])]
PolicyName = Annotated[str, Path(min_length=1, max_length=150, examples=["DefaultPolicy"])]
VmName = Annotated[str, Path(min_length=1, max_length=128, description="The protected VM's name", examples=["sample-vm"])]
Id = Annotated[str, Path(min_length=1, max_length=64)]
RegionName = Annotated[str, Path(min_length=1, max_length=64, examples=["local"])]
HostName = Annotated[str, Path(min_length=1, max_length=128, description="The host's name", examples=["host1"])]
