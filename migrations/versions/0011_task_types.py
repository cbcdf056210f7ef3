"""teachers.task_type and datasets.task_type: classification or segmentation

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 12:30:00

A segmentation teacher gives per-pixel logits [N, K, H, W]; its task decides which methods and
students a job may pair with it. A dataset of masks [N, H, W] (instead of labels [N]) evaluates
segmentation jobs. Every row stored before this revision is a classifier or a labelled set.
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

TABLES = ("teachers", "datasets")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch_op:
            batch_op.add_column(
                sa.Column(
                    "task_type",
                    sa.String(20),
                    nullable=False,
                    server_default="classification",
                )
            )


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_column("task_type")
