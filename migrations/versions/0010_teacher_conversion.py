"""teachers.conversion: what converting an ONNX teacher found (opset, max difference)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 09:00:00

An ONNX teacher is converted to a torch module and compared with onnxruntime at upload; the
opset, the converter and the max difference are kept on the teacher so users see how close the
converted network is. Other formats leave it null.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("teachers") as batch_op:
        batch_op.add_column(sa.Column("conversion", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("teachers") as batch_op:
        batch_op.drop_column("conversion")
