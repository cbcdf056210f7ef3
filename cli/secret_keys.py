"""`dfkd secrets generate-key | rotate`: the operator's side of webhook secrets at rest."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(commands: Any) -> None:
    secrets = commands.add_parser(
        "secrets", help="keys that encrypt webhook secrets in the database"
    )
    actions = secrets.add_subparsers(dest="action", required=True)
    generate = actions.add_parser("generate-key", help="print a new key for DFKD_SECRET_KEY")
    generate.set_defaults(handler=_generate_key)
    rotate = actions.add_parser(
        "rotate",
        help="re-encrypt every webhook secret with DFKD_SECRET_KEY (older keys in "
        "DFKD_SECRET_KEYS_OLD) and encrypt those stored plain before encryption existed",
    )
    rotate.set_defaults(handler=_rotate)


def _generate_key(_args: argparse.Namespace) -> int:
    from cryptography.fernet import Fernet

    print(Fernet.generate_key().decode())
    return 0


def _rotate(_args: argparse.Namespace) -> int:
    from service.db import make_engine, make_session_factory
    from service.secret_rotation import rotate_webhook_secrets
    from service.settings import get_settings

    settings = get_settings()
    sessions = make_session_factory(make_engine(settings.resolved_database_url))
    counts = rotate_webhook_secrets(sessions, settings)
    print(
        json.dumps({"reencrypted": counts.reencrypted, "encrypted_plain": counts.encrypted_plain})
    )
    return 0
