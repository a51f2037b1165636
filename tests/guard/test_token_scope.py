"""A token acts with every role of its principal: a subscription Owner may not mint one for a principal that holds
roles it does not own (before: naming the global Owner as --principal gave a prod Owner a global Owner token)."""


def test_a_subscription_owner_cannot_mint_a_token_for_the_global_owner(api):
    api.post("/api/v1/subscriptions", json={"name": "prod"})
    api.post("/api/v1/subscriptions", json={"name": "other"})
    prod_owner = api.post("/api/v1/tokens", json={"name": "po", "role": "Owner", "subscription": "prod"}).json()["token"]
    as_po = {"Authorization": f"Bearer {prod_owner}"}
    r = api.post("/api/v1/tokens", json={"name": "x", "role": "Reader", "subscription": "prod", "principal": "local-owner"}, headers=as_po)
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == "UserErrorPrincipalNotOwned"
    # nothing was made: the would-be token does not exist, and the prod Owner still cannot see 'other'
    tokens = api.get("/api/v1/tokens").json()
    assert [t["name"] for t in tokens if t["principal"] == "local-owner"] == ["local-owner"]
    assert api.get("/api/v1/subscriptions/other", headers=as_po).status_code == 404
    # and the global Owner's roles were not touched (no Reader on prod was added to it)
    me = api.get("/api/v1/whoami").json()
    assert list(me["roles"].values()) == ["Owner"]


def test_a_subscription_owner_cannot_mint_a_token_for_another_subscriptions_principal(api):
    for sub in ("prod", "other"):
        api.post("/api/v1/subscriptions", json={"name": sub})
    api.post("/api/v1/tokens", json={"name": "oo", "role": "Owner", "subscription": "other", "principal": "other-admin"})
    prod_owner = api.post("/api/v1/tokens", json={"name": "po", "role": "Owner", "subscription": "prod"}).json()["token"]
    r = api.post("/api/v1/tokens", json={"name": "x", "role": "Reader", "subscription": "prod", "principal": "other-admin"},
                 headers={"Authorization": f"Bearer {prod_owner}"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "UserErrorPrincipalNotOwned", r.text
    # its own principals stay manageable
    r = api.post("/api/v1/tokens", json={"name": "ci", "role": "Operator", "subscription": "prod", "principal": "ci-bot"},
                 headers={"Authorization": f"Bearer {prod_owner}"})
    assert r.status_code == 201, r.text
    r = api.post("/api/v1/tokens", json={"name": "ci-2", "role": "Reader", "subscription": "prod", "principal": "ci-bot"},
                 headers={"Authorization": f"Bearer {prod_owner}"})
    assert r.status_code == 201, r.text
