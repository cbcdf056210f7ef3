"""`dfkd keys create | list | revoke`: the operator's side of API keys."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(commands: Any) -> None:
    keys = commands.add_parser("keys", help="create, list and revoke API keys")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="a new key for a tenant (made if new); printed once")
    create.add_argument("--tenant", required=True, help="tenant name")
    create.add_argument("--name", default="default", help="what the key is for")
    create.set_defaults(handler=_create)
    listing = actions.add_parser("list", help="keys with their tenant and state (never the secret)")
    listing.add_argument("--tenant", default=None)
    listing.set_defaults(handler=_list)
    revoke = actions.add_parser("revoke", help="revoke a key by its id (key_...)")
    revoke.add_argument("key_id")
    revoke.set_defaults(handler=_revoke)


def _sessions() -> Any:
    from service.db import make_engine, make_session_factory
    from service.settings import get_settings

    return make_session_factory(make_engine(get_settings().resolved_database_url))


def _create(args: argparse.Namespace) -> int:
    from service.auth import create_key
    from service.db import session_scope

    with session_scope(_sessions()) as session:
        key, secret = create_key(session, args.tenant, args.name)
        print(json.dumps({"id": key.id, "tenant": args.tenant, "name": key.name, "key": secret}))
    return 0


def _list(args: argparse.Namespace) -> int:
    from service.auth import list_keys
    from service.db import session_scope

    with session_scope(_sessions()) as session:
        for key, tenant in list_keys(session, args.tenant):
            state = "revoked" if key.revoked_at else "active"
            print(
                json.dumps(
                    {
                        "id": key.id,
                        "tenant": tenant.name,
                        "name": key.name,
                        "state": state,
                        "created_at": key.created_at.isoformat(),
                    }
                )
            )
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from service.auth import revoke_key
    from service.db import session_scope

    with session_scope(_sessions()) as session:
        if not revoke_key(session, args.key_id):
            print(f"no active key {args.key_id}")
            return 1
    print(f"revoked {args.key_id}")
    return 0
