"""The host's way out: to the server's API and to the vaults' storage, used by the server and the agents alike.

- ``agentconf``: the host agent's network configuration (``$HAVEN_HOME/agent.conf``, proxy variables);
- ``backend``: where a storage URL's traffic goes and the backend opened for it (proxy applied, errors typed, retried);
- ``credentials``: a region's storage settings of ``haven.toml`` turned into backend options (secrets read when used);
- ``probe``: the DNS/TCP/proxy/TLS/request walk behind ``haven prepare check``;
- ``client``: the HTTP client of the API, for the CLI and the remote host agent;
- ``errors``: their typed errors.

It imports the engine, ``errors`` and ``config`` only: never services, the API, the CLI, the database or the web.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from haven.transport.agentconf import (
        AgentNetworkConfig,
        agent_config_path,
        load_agent_config,
        set_agent_proxy,
        show_agent_proxy,
        write_agent_config,
    )
    from haven.transport.backend import Endpoint, ProxyAwareBackend, backend_options, endpoint_of, open_agent_backend
    from haven.transport.client import ApiClient, ServerUnreachable
    from haven.transport.errors import (
        AgentConfigInvalid,
        ProxyAuthenticationRequired,
        ProxyHostInvalid,
        ProxyRefusedEndpoint,
        ProxyUnreachable,
        StorageCertificateUntrusted,
        StorageEndpointNotResolved,
        StorageEndpointTimeout,
        StorageOptionsInvalid,
        StorageTlsFailed,
    )
    from haven.transport.probe import ProbeResult, ProbeStep, probe_endpoint

# Each name is imported from its module when first used: the CLI needs ``client`` only, and importing
# ``backend`` would load the storage engine into every ``haven`` command.
_WHERE = {
    **dict.fromkeys(["AgentNetworkConfig", "agent_config_path", "load_agent_config", "set_agent_proxy",
                     "show_agent_proxy", "write_agent_config"], "agentconf"),
    **dict.fromkeys(["Endpoint", "ProxyAwareBackend", "backend_options", "endpoint_of", "open_agent_backend"], "backend"),
    **dict.fromkeys(["ApiClient", "ServerUnreachable"], "client"),
    **dict.fromkeys(["AgentConfigInvalid", "ProxyAuthenticationRequired", "ProxyHostInvalid", "ProxyRefusedEndpoint",
                     "ProxyUnreachable", "StorageCertificateUntrusted", "StorageEndpointNotResolved",
                     "StorageEndpointTimeout", "StorageOptionsInvalid", "StorageTlsFailed"], "errors"),
    **dict.fromkeys(["ProbeResult", "ProbeStep", "probe_endpoint"], "probe"),
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'haven.transport' has no attribute {name!r}")
    return getattr(import_module(f"haven.transport.{module}"), name)


__all__ = [
    "AgentNetworkConfig",
    "agent_config_path",
    "load_agent_config",
    "write_agent_config",
    "show_agent_proxy",
    "set_agent_proxy",
    "Endpoint",
    "endpoint_of",
    "backend_options",
    "open_agent_backend",
    "ProxyAwareBackend",
    "ProbeStep",
    "ProbeResult",
    "probe_endpoint",
    "ApiClient",
    "ServerUnreachable",
    "AgentConfigInvalid",
    "ProxyAuthenticationRequired",
    "ProxyHostInvalid",
    "ProxyRefusedEndpoint",
    "ProxyUnreachable",
    "StorageCertificateUntrusted",
    "StorageEndpointNotResolved",
    "StorageEndpointTimeout",
    "StorageOptionsInvalid",
    "StorageTlsFailed",
]
