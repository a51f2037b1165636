"""Item 8 (extends tests/foundation/test_authorization.py, which holds the 9-principal matrix):
secrets — API tokens, key-vault secret values (BEKs), key material, the master key — never appear
in clear in the database (every table, every column, SQLite and PostgreSQL), in the logs of the run
that used them, or in list/metadata responses."""

from __future__ import annotations

import logging

from sqlalchemy import MetaData, select

from .conftest import report

SECRET_VALUE = "BEK-luks-passphrase-7d1f9c0e-reliability"


def _dump_database(core) -> str:
    md = MetaData()
    md.reflect(core.db.engine)
    out = []
    with core.db.engine.connect() as conn:
        for table in md.sorted_tables:
            for row in conn.execute(select(table)):
                out.append(" ".join(v.decode("latin-1") if isinstance(v, (bytes, memoryview)) and not isinstance(v, memoryview)
                                    else bytes(v).decode("latin-1") if isinstance(v, memoryview) else str(v) for v in row))
    return "\n".join(out)


def test_no_secret_in_database_logs_or_listings(api, core, owner_token, caplog):
    caplog.set_level(logging.DEBUG)
    assert api.post("/api/v1/subscriptions", json={"name": "prod"}).status_code == 201
    r = api.post("/api/v1/tokens", json={"name": "ops", "role": "Operator", "subscription": "prod"})
    assert r.status_code == 201, r.text
    new_token = r.json()["token"]
    assert api.get("/api/v1/whoami", headers={"Authorization": f"Bearer {new_token}"}).status_code == 200
    assert api.post("/api/v1/subscriptions/prod/keyvaults", json={"name": "kv1", "region": "local"}).status_code == 201
    r = api.put("/api/v1/subscriptions/prod/keyvaults/kv1/secrets/bek1", json={"value": SECRET_VALUE})
    assert r.status_code in (200, 201), r.text
    assert api.post("/api/v1/subscriptions/prod/keyvaults/kv1/keys", json={"name": "kek1", "kty": "RSA"}).status_code in (200, 201)
    secrets = {"owner token": owner_token, "new token": new_token, "secret value": SECRET_VALUE}
    # listings and metadata answers never carry them
    for path in ("/api/v1/tokens", "/api/v1/subscriptions/prod/keyvaults/kv1/secrets", "/api/v1/subscriptions/prod/keyvaults/kv1/keys",
                 "/api/v1/whoami"):
        body = api.get(path).text
        for what, value in secrets.items():
            assert value not in body, f"{what} in the answer of {path}"
    dump = _dump_database(core)
    assert dump, "empty database dump"
    for what, value in secrets.items():
        assert value not in dump, f"{what} stored in clear in the database ({core.db.dialect})"
    # no token secret part either (tokens are stored hashed)
    assert new_token[len("hvn_"):] not in dump  # (token_urlsafe may itself contain "_")
    logs = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    for what, value in secrets.items():
        assert value not in logs, f"{what} in the logs"
    report(f"secrets[{core.db.dialect}]", secrets_checked=len(secrets), tables_scanned=dump.count("\n") + 1, found_in_clear=0)
