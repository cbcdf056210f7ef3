"""tenants, api keys, idempotency records; every object owned by a tenant

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 02:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

DEFAULT_TENANT = "tnt_default"
OWNED = ("teachers", "datasets", "jobs")


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    # Objects made before tenancy (and on an open deployment without a key) belong to this one.
    op.execute(
        sa.text(
            "INSERT INTO tenants (id, name, created_at) VALUES (:id, 'default', CURRENT_TIMESTAMP)"
        ).bindparams(id=DEFAULT_TENANT)
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("secret_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_api_keys_tenant"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("secret_sha256"),
    )
    op.create_table(
        "idempotency_records",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("endpoint", sa.String(length=100), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("request_sha256", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ux_idempotency", "idempotency_records", ["tenant_id", "endpoint", "key"], unique=True
    )
    for table in OWNED:
        with op.batch_alter_table(table) as batch_op:
            batch_op.add_column(
                sa.Column(
                    "tenant_id", sa.String(length=40), nullable=False, server_default=DEFAULT_TENANT
                )
            )
            batch_op.create_index(f"ix_{table}_tenant_id", ["tenant_id"])
            batch_op.create_foreign_key(f"fk_{table}_tenant", "tenants", ["tenant_id"], ["id"])


def downgrade() -> None:
    for table in OWNED:
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_constraint(f"fk_{table}_tenant", type_="foreignkey")
            batch_op.drop_index(f"ix_{table}_tenant_id")
            batch_op.drop_column("tenant_id")
    op.drop_index("ux_idempotency", table_name="idempotency_records")
    op.drop_table("idempotency_records")
    op.drop_table("api_keys")
    op.drop_table("tenants")
