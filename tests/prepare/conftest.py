"""Fixtures for the prepare tests: a test CA and certificate, Azurite over HTTPS, real proxies, a
black-hole endpoint (accepts TCP, never answers), and a dead port."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services._util import free_port, require, start, stop
from tests.services.azurite import ACCOUNT, ACCOUNT_KEY, AZURITE, azurite  # noqa: F401
from tests.services.proxies import squid, squid_auth, tinyproxy, tinyproxy_auth  # noqa: F401
from tests.services.s3 import s3_server  # noqa: F401


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory) -> dict:
    """A CA and a server certificate for 127.0.0.1/localhost, made with ``cryptography``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder = tmp_path_factory.mktemp("ca")
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Haven Test CA")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False, key_agreement=False,
                                            encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
               .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = {"ca": folder / "ca.pem", "cert": folder / "server.pem", "key": folder / "server.key"}
    paths["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                               serialization.NoEncryption()))
    return {k: str(v) for k, v in paths.items()}


@pytest.fixture(scope="session")
def azurite_https(tmp_path_factory, test_ca) -> Iterator[str]:
    """Azurite's blob service over HTTPS with the test certificate; yields its connection string."""
    require(AZURITE.exists(), f"{AZURITE} (run scripts/setup-node.sh)")
    folder = tmp_path_factory.mktemp("azurite-https")
    log = folder / "azurite.log"
    proc = start([str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", "0", "--inMemoryPersistence",
                  "--extentMemoryLimit", "256", "--skipApiVersionCheck", "--loose", "--disableTelemetry",
                  "--cert", test_ca["cert"], "--key", test_ca["key"]], log, cwd=folder)
    try:
        end = time.monotonic() + 30
        port = None
        while time.monotonic() < end and port is None:
            m = re.search(r"successfully listens on https://127\.0\.0\.1:(\d+)", log.read_text(errors="replace"))
            if m:
                port = int(m.group(1))
            elif proc.poll() is not None:
                raise RuntimeError(f"azurite exited: {log.read_text(errors='replace')[-2000:]}")
            else:
                time.sleep(0.05)
        if port is None:
            raise TimeoutError("azurite (https) did not start")
        yield (f"DefaultEndpointsProtocol=https;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
               f"BlobEndpoint=https://127.0.0.1:{port}/{ACCOUNT};")
    finally:
        stop(proc)


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port that accepts TCP connections and never answers: an endpoint that times out."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not done.is_set():
            try:
                conn, _ = srv.accept()
                held.append(conn)
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    done.set()
    t.join(2)
    for c in held:
        c.close()
    srv.close()


@pytest.fixture
def dead_port() -> int:
    """A port nothing listens on (connections are refused)."""
    return free_port()


def write_conf(home: Path, text: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "agent.conf"
    path.write_text(text)
    return path
