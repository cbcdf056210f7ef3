"""API keys: created and revoked by the operator (`dfkd keys`), each bound to one tenant."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.models import ApiKey, Tenant, utcnow

KEY_PREFIX = "dfkd_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def tenant_named(session: Session, name: str, create: bool = False) -> Tenant | None:
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None and create:
        tenant = Tenant(name=name)
        session.add(tenant)
        session.flush()
    return tenant


def create_key(session: Session, tenant_name: str, key_name: str) -> tuple[ApiKey, str]:
    """A new key for the tenant (made if new). The secret is returned once and never stored."""
    tenant = tenant_named(session, tenant_name, create=True)
    assert tenant is not None
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(tenant_id=tenant.id, name=key_name, secret_sha256=hash_key(secret))
    session.add(key)
    session.flush()
    return key, secret


def list_keys(session: Session, tenant_name: str | None = None) -> list[tuple[ApiKey, Tenant]]:
    query = (
        select(ApiKey, Tenant)
        .join(Tenant, Tenant.id == ApiKey.tenant_id)
        .order_by(ApiKey.created_at)
    )
    if tenant_name is not None:
        query = query.where(Tenant.name == tenant_name)
    return [(key, tenant) for key, tenant in session.execute(query)]


def revoke_key(session: Session, key_id: str) -> bool:
    key = session.get(ApiKey, key_id)
    if key is None or key.revoked_at is not None:
        return False
    key.revoked_at = utcnow()
    return True


def tenant_for_key(session: Session, secret: str) -> str | None:
    """The tenant id of a valid, unrevoked key; None otherwise."""
    key = session.scalar(select(ApiKey).where(ApiKey.secret_sha256 == hash_key(secret)))
    if key is None or key.revoked_at is not None:
        return None
    return key.tenant_id


def key_id_for(session: Session, secret: str | None) -> str | None:
    """The id of the key (kept in deletion records: who deleted); None without a key."""
    if secret is None:
        return None
    return session.scalar(select(ApiKey.id).where(ApiKey.secret_sha256 == hash_key(secret)))
