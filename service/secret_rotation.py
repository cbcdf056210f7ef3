"""`dfkd secrets rotate`: every stored webhook secret encrypted with the current key.

Re-encrypts tokens made with an older key (DFKD_SECRET_KEYS_OLD) and encrypts the plain secrets
of jobs made before migration 0009, clearing their plain column. Run after changing
DFKD_SECRET_KEY; the old key can be dropped once it has run. On SQLite the cleared plain text is
overwritten too (secure_delete, then a checkpoint that empties the write-ahead log), so it is
gone from the database's files, not only from its rows.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import or_, select, text
from sqlalchemy.orm import Session, sessionmaker

from service.models import Job
from service.secret_box import encrypt_secret, reencrypt_secret
from service.settings import Settings

BATCH = 500


@dataclass
class Rotated:
    reencrypted: int = 0
    encrypted_plain: int = 0


def rotate_webhook_secrets(sessions: sessionmaker[Session], settings: Settings) -> Rotated:
    counts = Rotated()
    after = ""
    while True:
        with sessions() as session:
            if session.get_bind().dialect.name == "sqlite":  # overwrite freed plain text
                session.execute(text("PRAGMA secure_delete = ON"))
            jobs = session.scalars(
                select(Job)
                .where(Job.id > after)
                .where(
                    or_(Job.webhook_secret_encrypted.is_not(None), Job.webhook_secret.is_not(None))
                )
                .order_by(Job.id)
                .limit(BATCH)
            ).all()
            if not jobs:
                if session.get_bind().dialect.name == "sqlite":
                    session.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
                return counts
            for job in jobs:
                if job.webhook_secret_encrypted:
                    job.webhook_secret_encrypted = reencrypt_secret(
                        settings, job.webhook_secret_encrypted
                    )
                    counts.reencrypted += 1
                else:
                    job.webhook_secret_encrypted = encrypt_secret(
                        settings, job.webhook_secret or ""
                    )
                    counts.encrypted_plain += 1
                job.webhook_secret = None
            session.commit()
            after = jobs[-1].id
