"""webhook secrets encrypted at rest: a column for the Fernet token

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 05:40:00

The migration cannot encrypt the secrets already stored: it does not run with the service's key
(on the embedded default the key is made by the service in its data dir). Secrets written before
it stay in `webhook_secret`, read as plain (and still used to sign), until `dfkd secrets rotate`
encrypts them into `webhook_secret_encrypted` and clears the plain column. New jobs write only
the encrypted column.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("webhook_secret_encrypted", sa.Text(), nullable=True))


def downgrade() -> None:
    # the encrypted secrets cannot be decrypted here: they are lost with the column
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_column("webhook_secret_encrypted")
