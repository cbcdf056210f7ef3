"""datasets, teacher metadata records, job evaluation and artifacts

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 01:25:42.047595
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('datasets',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('format', sa.String(length=20), nullable=False),
    sa.Column('blob_key', sa.String(length=300), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('num_examples', sa.Integer(), nullable=False),
    sa.Column('image_shape', sa.JSON(), nullable=False),
    sa.Column('pixel_dtype', sa.String(length=20), nullable=False),
    sa.Column('class_counts', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.create_index('ix_datasets_created', ['created_at', 'id'], unique=False)

    op.create_table('job_artifacts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('job_id', sa.String(length=40), nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('blob_key', sa.String(length=300), nullable=False),
    sa.Column('content_type', sa.String(length=100), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('job_artifacts', schema=None) as batch_op:
        batch_op.create_index('ix_job_artifacts_job_kind', ['job_id', 'kind', 'step'], unique=False)

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('evaluation_dataset_id', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('few_shot_dataset_id', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('few_shot_per_class', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('sample_every', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('checkpoint_every', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('evaluation_options', sa.JSON(), nullable=False, server_default='{}'))
        batch_op.add_column(sa.Column('report', sa.JSON(), nullable=True))
        batch_op.create_foreign_key('fk_jobs_evaluation_dataset', 'datasets', ['evaluation_dataset_id'], ['id'])
        batch_op.create_foreign_key('fk_jobs_few_shot_dataset', 'datasets', ['few_shot_dataset_id'], ['id'])

    with op.batch_alter_table('teachers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('metadata_key', sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column('metadata_info', sa.JSON(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('teachers', schema=None) as batch_op:
        batch_op.drop_column('metadata_info')
        batch_op.drop_column('metadata_key')

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_constraint('fk_jobs_few_shot_dataset', type_='foreignkey')
        batch_op.drop_constraint('fk_jobs_evaluation_dataset', type_='foreignkey')
        batch_op.drop_column('report')
        batch_op.drop_column('evaluation_options')
        batch_op.drop_column('checkpoint_every')
        batch_op.drop_column('sample_every')
        batch_op.drop_column('few_shot_per_class')
        batch_op.drop_column('few_shot_dataset_id')
        batch_op.drop_column('evaluation_dataset_id')

    with op.batch_alter_table('job_artifacts', schema=None) as batch_op:
        batch_op.drop_index('ix_job_artifacts_job_kind')

    op.drop_table('job_artifacts')
    with op.batch_alter_table('datasets', schema=None) as batch_op:
        batch_op.drop_index('ix_datasets_created')

    op.drop_table('datasets')
