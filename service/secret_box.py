"""Webhook secrets at rest: encrypted with Fernet (cryptography's MultiFernet), never stored plain.

The key is DFKD_SECRET_KEY; earlier keys in DFKD_SECRET_KEYS_OLD are still read, so a rotation
is: put the new key in DFKD_SECRET_KEY and the old one in DFKD_SECRET_KEYS_OLD, restart, run
`dfkd secrets rotate` (re-encrypts every secret with the new key), then drop the old key. On the
embedded default (no DFKD_SECRET_KEY) a key is made once and kept in the data dir, mode 0600.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from functools import lru_cache
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from service.settings import Settings

log = logging.getLogger(__name__)

KEY_FILE = "secret.key"


class SecretKeyError(Exception):
    """A secret cannot be decrypted with this process's keys; the message says what to set."""


def data_dir_key(data_dir: Path) -> bytes:
    """The data dir's key, made on first use. Created whole under another name and linked into
    place, so processes starting together (API, runner, workers) all read the same key."""
    path = data_dir / KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        draft = data_dir / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(Fernet.generate_key())
                handle.flush()
                os.fsync(handle.fileno())
            os.link(draft, path)
            log.info("made a key for webhook secrets in %s (set DFKD_SECRET_KEY to choose)", path)
        except FileExistsError:
            pass  # another process made it first: use theirs
        finally:
            draft.unlink()
    if path.stat().st_mode & 0o077:
        log.warning("%s can be read by other users: chmod 600 it", path)
    return path.read_bytes().strip()


@lru_cache
def _box(current: str | None, old: tuple[str, ...], data_dir: str) -> MultiFernet:
    key = current.encode() if current else data_dir_key(Path(data_dir))
    return MultiFernet([Fernet(key), *(Fernet(k.encode()) for k in old)])


def current_key(settings: Settings) -> bytes:
    if settings.secret_key:
        return settings.secret_key.get_secret_value().encode()
    return data_dir_key(settings.data_dir)


def secret_digest(settings: Settings, secret: str) -> str:
    """A digest of a secret keyed with the current key: two requests can be compared (the
    Idempotency-Key check) without storing a hash a guessed secret could be tested against."""
    return hmac.new(current_key(settings), secret.encode(), hashlib.sha256).hexdigest()


def secret_box(settings: Settings) -> MultiFernet:
    """Encrypts with the current key, decrypts with it or any older one."""
    current = settings.secret_key.get_secret_value() if settings.secret_key else None
    old = tuple(key.get_secret_value() for key in settings.secret_keys_old)
    return _box(current, old, str(settings.data_dir.resolve()))


def encrypt_secret(settings: Settings, plain: str) -> str:
    return secret_box(settings).encrypt(plain.encode()).decode()


def decrypt_secret(settings: Settings, token: str) -> str:
    try:
        return secret_box(settings).decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretKeyError(
            "the webhook secret was encrypted with a key this process does not have: give the API "
            "and every worker the same DFKD_SECRET_KEY, with earlier keys in DFKD_SECRET_KEYS_OLD"
        ) from None


def reencrypt_secret(settings: Settings, token: str) -> str:
    """The same secret encrypted with the current key (MultiFernet.rotate)."""
    try:
        return secret_box(settings).rotate(token.encode()).decode()
    except InvalidToken:
        raise SecretKeyError(
            "a webhook secret was encrypted with none of DFKD_SECRET_KEY and DFKD_SECRET_KEYS_OLD; "
            "add the key it was made with to DFKD_SECRET_KEYS_OLD"
        ) from None
