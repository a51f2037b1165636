"""remote host agents: the job types, version and network path each host's agent reports

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 23:59:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('job_types', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('agent_version', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('network', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.drop_column('network')
        batch_op.drop_column('agent_version')
        batch_op.drop_column('job_types')
