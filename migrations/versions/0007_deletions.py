"""deletions: a record of each deleted teacher, dataset and job that outlives the object

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 06:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deletions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("key_id", sa.String(40), nullable=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("object_id", sa.String(40), nullable=False),
        sa.Column("reason", sa.String(20), nullable=False),
        sa.Column("blobs_deleted", sa.Integer(), nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_deletions_tenant", "deletions", ["tenant_id", "id"])
    op.create_index("ix_deletions_object", "deletions", ["object_id"])


def downgrade() -> None:
    op.drop_index("ix_deletions_object", table_name="deletions")
    op.drop_index("ix_deletions_tenant", table_name="deletions")
    op.drop_table("deletions")
