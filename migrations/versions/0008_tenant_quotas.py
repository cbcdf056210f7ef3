"""tenant quotas: per-tenant overrides of DFKD_TENANT_MAX_ACTIVE_JOBS and DFKD_TENANT_MAX_STORAGE_BYTES

NULL keeps the deployment's setting; 0 means unlimited for that tenant.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 05:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch_op:
        batch_op.add_column(sa.Column("max_active_jobs", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("max_storage_bytes", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tenants") as batch_op:
        batch_op.drop_column("max_storage_bytes")
        batch_op.drop_column("max_active_jobs")
