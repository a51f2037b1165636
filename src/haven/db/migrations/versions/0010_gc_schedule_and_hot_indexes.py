"""indexes for the hot queries (points by item and time, jobs by vault, status and time) and the
per-vault garbage-collection schedule (last run, requested after deletions or a failed backup)

Revision ID: 0010
Revises: 0004
Create Date: 2026-12-10 12:00:00
"""
from alembic import op
import sqlalchemy as sa
import haven.db.types


revision = '0010'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('vaults', schema=None) as batch_op:
        batch_op.add_column(sa.Column('gc_last_at', haven.db.types.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('gc_requested_at', haven.db.types.UTCDateTime(), nullable=True))
    op.create_index('ix_recovery_points_item_time', 'recovery_points', ['item_id', 'time'])
    op.create_index('ix_recovery_points_vault', 'recovery_points', ['vault_id'])
    op.create_index('ix_jobs_vault_created', 'jobs', ['vault_id', 'created_at'])
    op.create_index('ix_jobs_vault_status_created', 'jobs', ['vault_id', 'status', 'created_at'])
    op.create_index('ix_jobs_item_status', 'jobs', ['item_id', 'status'])
    op.create_index('ix_jobs_host_status', 'jobs', ['host_id', 'status'])


def downgrade() -> None:
    op.drop_index('ix_jobs_host_status', table_name='jobs')
    op.drop_index('ix_jobs_item_status', table_name='jobs')
    op.drop_index('ix_jobs_vault_status_created', table_name='jobs')
    op.drop_index('ix_jobs_vault_created', table_name='jobs')
    op.drop_index('ix_recovery_points_vault', table_name='recovery_points')
    op.drop_index('ix_recovery_points_item_time', table_name='recovery_points')
    with op.batch_alter_table('vaults', schema=None) as batch_op:
        batch_op.drop_column('gc_requested_at')
        batch_op.drop_column('gc_last_at')
