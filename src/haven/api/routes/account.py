"""Regions, subscriptions, tokens, and who the caller is."""

from datetime import timedelta

from fastapi import APIRouter, Depends, Response, status

from haven.api.deps import caller, core
from haven.api.routes.params import Id, RegionName, Sub
from haven.api.schemas import IpRangesOut, RegionOut, SubscriptionIn, SubscriptionOut, TokenCreated, TokenIn, TokenOut, WhoAmI

router = APIRouter()


@router.get("/regions", response_model=list[RegionOut], tags=["regions"])
def list_regions(app=Depends(core), who=Depends(caller)):
    return app.regions.list()


@router.get("/regions/{region}/ip-ranges", response_model=IpRangesOut, tags=["regions"])
def region_ip_ranges(region: RegionName, app=Depends(core), who=Depends(caller)):
    return app.regions.ip_ranges(region)


@router.get("/whoami", response_model=WhoAmI, tags=["tokens"])
def whoami(who=Depends(caller)):
    return {"principal": who.name, "kind": who.kind, "roles": {k: v.value for k, v in who.roles.items()}}


@router.post("/subscriptions", response_model=SubscriptionOut, status_code=status.HTTP_201_CREATED, tags=["subscriptions"])
def create_subscription(body: SubscriptionIn, app=Depends(core), who=Depends(caller)):
    return app.subscriptions.create(who, body.name)


@router.get("/subscriptions", response_model=list[SubscriptionOut], tags=["subscriptions"])
def list_subscriptions(app=Depends(core), who=Depends(caller)):
    return app.subscriptions.list(who)


@router.get("/subscriptions/{subscription}", response_model=SubscriptionOut, tags=["subscriptions"])
def show_subscription(subscription: Sub, app=Depends(core), who=Depends(caller)):
    return app.subscriptions.show(who, subscription)


@router.post("/tokens", response_model=TokenCreated, status_code=status.HTTP_201_CREATED, tags=["tokens"])
def create_token(body: TokenIn, app=Depends(core), who=Depends(caller)):
    expires = timedelta(days=body.expires_in_days) if body.expires_in_days else None
    return app.auth.create_token(who, body.name, body.role, body.subscription, expires, body.principal)


@router.get("/tokens", response_model=list[TokenOut], tags=["tokens"])
def list_tokens(app=Depends(core), who=Depends(caller)):
    return app.auth.list_tokens(who)


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["tokens"])
def revoke_token(token_id: Id, app=Depends(core), who=Depends(caller)):
    app.auth.revoke_token(who, token_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
