"""job budgets: budget_seconds as an alternative to iterations, and progress as a fraction

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 06:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.alter_column("iterations", existing_type=sa.Integer(), nullable=True)
        batch_op.add_column(sa.Column("budget_seconds", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("progress_total", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("progress_fraction", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_column("progress_fraction")
        batch_op.drop_column("progress_total")
        batch_op.drop_column("budget_seconds")
        batch_op.alter_column("iterations", existing_type=sa.Integer(), nullable=False)
