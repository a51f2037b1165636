"""The key vault over HTTP: management, keys, secrets, policies, errors with code and fix."""

from __future__ import annotations

import base64
import os

P = "/api/v1/subscriptions/prod/keyvaults"


def test_api_flow(api):
    assert api.post("/api/v1/subscriptions", json={"name": "prod"}).status_code == 201
    r = api.post(P, json={"name": "kv-api", "region": "local"})
    assert r.status_code == 201, r.text
    bad = api.post(P, json={"name": "9bad", "region": "local"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "UserErrorKeyVaultNameInvalid"
    assert api.post(f"{P}/kv-api/keys", json={"name": "kek", "kty": "AES"}).status_code == 201
    data = os.urandom(32)
    w = api.post(f"{P}/kv-api/keys/kek/wrapkey", json={"value": base64.b64encode(data).decode()}).json()
    u = api.post(f"{P}/kv-api/keys/kek/unwrapkey", json={"value": w["value"]}).json()
    assert base64.urlsafe_b64decode(u["value"] + "==") == data
    assert api.put(f"{P}/kv-api/secrets/s1", json={"value": "v1"}).status_code == 200
    assert api.get(f"{P}/kv-api/secrets/s1").json()["value"] == "v1"
    blob = api.post(f"{P}/kv-api/secrets/s1/backup").json()["value"]
    api.delete(f"{P}/kv-api/secrets/s1")
    assert api.post(f"{P}/kv-api/secrets/s1/purge").status_code == 204
    assert api.post(f"{P}/kv-api/secrets/restore", json={"value": blob}).status_code == 201
    pol = api.put(f"{P}/kv-api/access-policies/Backup Management Service", json={"template": "Haven Backup"})
    assert pol.status_code == 200 and pol.json()["secret_permissions"] == ["get", "list", "backup"]
    shown = api.get(f"{P}/kv-api").json()
    assert {p["principal"] for p in shown["access_policies"]} == {"local-owner", "Backup Management Service"}
    missing = api.post(f"{P}/kv-api/keys/nope/unwrapkey", json={"value": w["value"]})
    assert missing.status_code == 404 and missing.json()["error"]["recommendation"]
    assert api.delete(f"{P}/kv-api").json()["deleted_at"]
    assert [v["name"] for v in api.get(P, params={"deleted": "true"}).json()] == ["kv-api"]
