"""The errors of the host's outbound path to storage: proxies, endpoints, TLS, the agent's configuration."""

from __future__ import annotations

from haven.errors import PreconditionFailed, Transient, UserError

__all__ = [
    "ProxyAuthenticationRequired",
    "ProxyUnreachable",
    "StorageEndpointTimeout",
    "StorageEndpointNotResolved",
    "ProxyRefusedEndpoint",
    "StorageCertificateUntrusted",
    "StorageTlsFailed",
    "StorageOptionsInvalid",
    "AgentConfigInvalid",
    "ProxyHostInvalid",
    "StorageSecretUnreadable",
    "StorageCredentialsRejected",
]


class ProxyAuthenticationRequired(PreconditionFailed):
    code = "UserErrorProxyAuthenticationRequired"
    message = ("The proxy requires authentication: check the credentials in the agent configuration "
               "(proxy {proxy} answered {status} for {endpoint}).")
    recommendation = ("Set HttpProxy.User and HttpProxy.Password (or user:password@ in https_proxy) in {config} to an account "
                      "the proxy accepts, then run 'haven prepare check'.")


class ProxyUnreachable(Transient):
    code = "TransientErrorProxyUnreachable"
    message = "The proxy {proxy} did not accept a connection ({reason}), so the storage endpoint {endpoint} was not reached."
    recommendation = ("Start the proxy or fix HttpProxy.Host/HttpProxy.Port (or http_proxy/https_proxy) in {config}; "
                      "make sure the firewall lets this host reach the proxy's port.")


class StorageEndpointTimeout(Transient):
    code = "TransientErrorStorageEndpointTimeout"
    message = "The storage endpoint {endpoint} did not answer within {timeout:g} s{via} ({detail})."
    recommendation = ("Let this host reach {endpoint} (allow-list the region's ranges: 'haven prepare firewall-rules'), "
                      "or route it through a proxy (HttpProxy.Host/HttpProxy.Port in {config}); then run 'haven prepare check'.")


class StorageEndpointNotResolved(PreconditionFailed):
    code = "UserErrorStorageEndpointNotResolved"
    message = "{host} does not resolve: {reason}."
    recommendation = "Fix the name in {where} or the host's DNS resolver (/etc/resolv.conf)."


class ProxyRefusedEndpoint(PreconditionFailed):
    code = "UserErrorProxyRefusedEndpoint"
    message = "The proxy {proxy} did not pass the request on to {endpoint}: {line}."
    recommendation = ("Allow {endpoint} in the proxy's rules (squid: http_access and the SSL_ports acl for CONNECT; "
                      "tinyproxy: Filter and ConnectPort) and check the proxy's route to it.")


class StorageCertificateUntrusted(PreconditionFailed):
    code = "UserErrorStorageCertificateUntrusted"
    message = "The certificate of the storage endpoint {endpoint} is not trusted: {reason}."
    recommendation = "Add the CA that signed it as Storage.CABundle=<file> in {config}, or give the endpoint a certificate the host trusts."


class StorageTlsFailed(PreconditionFailed):
    code = "UserErrorStorageTlsFailed"
    message = "The TLS handshake with the storage endpoint {endpoint} failed: {reason}."
    recommendation = "Check that the endpoint speaks HTTPS on that port, and any TLS inspection by the proxy."


class StorageOptionsInvalid(PreconditionFailed):
    code = "UserErrorStorageOptionsInvalid"
    message = "The server's storage options for {url} are incomplete: {reason}."
    recommendation = "Configure the storage endpoint and credentials for this kind of storage URL on the server."


class AgentConfigInvalid(UserError):
    code = "UserErrorAgentConfigInvalid"
    message = "The agent configuration {config} is invalid: {reason}."
    recommendation = "Fix the line in {config} (HttpProxy.Host=<host>, HttpProxy.Port=<1-65535>, see docs/guides/agent-proxy.md)."


class ProxyHostInvalid(UserError):
    code = "UserErrorProxyHostInvalid"
    message = "The proxy host {host!r} is not a host name or an IP address."
    recommendation = ("Give the proxy's host name or IP address alone, e.g. "
                      "'haven prepare proxy set --host proxy.example.com --port 3128'; to go direct: 'haven prepare proxy set'.")


class StorageSecretUnreadable(PreconditionFailed):
    code = "UserErrorStorageSecretUnreadable"
    message = "The storage secret {key} of region {region!r} could not be read from {source}: {reason}."
    recommendation = ("Put the secret in {source} on the server (a file readable by the Haven service user only, mode 0600, "
                      "or a variable in the server's environment), then run 'haven prepare check'.")


class StorageCredentialsRejected(PreconditionFailed):
    code = "UserErrorStorageCredentialsRejected"
    message = "The storage of region {region!r} ({location}) refused the credentials configured for it ({detail})."
    recommendation = ("Check the credentials in [regions.storage] of region {region!r} on the server ({settings}): the key id, "
                      "the secret in its file or variable, and the account's permissions on the bucket or container; "
                      "then run 'haven prepare check'.")
