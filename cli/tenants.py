"""`dfkd tenants list | set-quota | clear`: the operator's per-tenant quota overrides."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 (unlimited) or more")
    return value


def add_parser(commands: Any) -> None:
    tenants = commands.add_parser(
        "tenants", help="tenants' quotas: list them with their use, override, clear"
    )
    actions = tenants.add_subparsers(dest="action", required=True)
    listing = actions.add_parser(
        "list", help="each tenant: overrides, limits in force (null: unlimited), current use"
    )
    listing.add_argument("--tenant", default=None, help="only this tenant")
    listing.set_defaults(handler=_list)
    setting = actions.add_parser(
        "set-quota", help="override the deployment's quotas for one tenant (0: unlimited)"
    )
    setting.add_argument("--tenant", required=True, help="tenant name (`default`: keyless calls)")
    setting.add_argument("--max-active-jobs", type=_count, default=None, help="queued + running")
    setting.add_argument("--max-storage-bytes", type=_count, default=None, help="stored bytes")
    setting.set_defaults(handler=_set)
    clearing = actions.add_parser(
        "clear", help="drop a tenant's overrides (both unless one is named): the settings apply"
    )
    clearing.add_argument("--tenant", required=True)
    clearing.add_argument("--max-active-jobs", action="store_true", help="only this override")
    clearing.add_argument("--max-storage-bytes", action="store_true", help="only this override")
    clearing.set_defaults(handler=_clear)


def _sessions() -> Any:
    from service.db import make_engine, make_session_factory
    from service.settings import get_settings

    return make_session_factory(make_engine(get_settings().resolved_database_url))


def _tenant(session: Any, name: str) -> Any:
    from service.auth import tenant_named

    tenant = tenant_named(session, name)
    if tenant is None:
        print(
            f"no tenant named {name!r}: tenants are made by `dfkd keys create --tenant {name}` "
            "(`default` is the tenant of requests without a key)",
            file=sys.stderr,
        )
    return tenant


def _print_report(session: Any, tenant: Any) -> None:
    from service.quotas import quota_report
    from service.settings import get_settings

    print(json.dumps(quota_report(session, tenant, get_settings())))


def _list(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from service.db import session_scope
    from service.models import Tenant

    with session_scope(_sessions()) as session:
        query = select(Tenant).order_by(Tenant.created_at, Tenant.name)
        if args.tenant is not None:
            query = query.where(Tenant.name == args.tenant)
        for tenant in session.scalars(query):
            _print_report(session, tenant)
    return 0


def _set(args: argparse.Namespace) -> int:
    from service.db import session_scope
    from service.quotas import set_overrides

    if args.max_active_jobs is None and args.max_storage_bytes is None:
        print("give --max-active-jobs and/or --max-storage-bytes", file=sys.stderr)
        return 2
    with session_scope(_sessions()) as session:
        tenant = _tenant(session, args.tenant)
        if tenant is None:
            return 1
        set_overrides(tenant, args.max_active_jobs, args.max_storage_bytes)
        session.flush()
        _print_report(session, tenant)
    return 0


def _clear(args: argparse.Namespace) -> int:
    from service.db import session_scope
    from service.quotas import clear_overrides

    both = not (args.max_active_jobs or args.max_storage_bytes)
    with session_scope(_sessions()) as session:
        tenant = _tenant(session, args.tenant)
        if tenant is None:
            return 1
        clear_overrides(tenant, both or args.max_active_jobs, both or args.max_storage_bytes)
        session.flush()
        _print_report(session, tenant)
    return 0
