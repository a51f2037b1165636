"""resource guards: multi-user authorization of destructive operations, approval requests and their audit

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-10 10:00:00
"""
from alembic import op
import sqlalchemy as sa
import haven.db.types


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('resource_guards',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('subscription_id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=50), nullable=False),
    sa.Column('name_key', sa.String(length=50), nullable=False),
    sa.Column('approval_window_minutes', sa.Integer(), nullable=False),
    sa.Column('created_at', haven.db.types.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['subscription_id'], ['subscriptions.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('subscription_id', 'name_key', name='uq_resource_guards_subscription_name')
    )
    op.create_table('resource_guard_approvers',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('guard_id', sa.String(length=32), nullable=False),
    sa.Column('principal_id', sa.String(length=32), nullable=False),
    sa.Column('created_at', haven.db.types.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['guard_id'], ['resource_guards.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['principal_id'], ['principals.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('guard_id', 'principal_id', name='uq_resource_guard_approvers')
    )
    op.create_table('vault_resource_guards',
    sa.Column('vault_id', sa.String(length=32), nullable=False),
    sa.Column('guard_id', sa.String(length=32), nullable=False),
    sa.Column('created_at', haven.db.types.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['guard_id'], ['resource_guards.id'], ),
    sa.ForeignKeyConstraint(['vault_id'], ['vaults.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('vault_id')
    )
    op.create_table('resource_guard_requests',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('guard_id', sa.String(length=32), nullable=False),
    sa.Column('vault_id', sa.String(length=32), nullable=False),
    sa.Column('vault_name', sa.String(length=50), nullable=False),
    sa.Column('subscription_id', sa.String(length=32), nullable=False),
    sa.Column('operation', sa.String(length=64), nullable=False),
    sa.Column('parameters', sa.JSON(), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('requester_id', sa.String(length=32), nullable=False),
    sa.Column('requester', sa.String(length=128), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', haven.db.types.UTCDateTime(), nullable=False),
    sa.Column('expires_at', haven.db.types.UTCDateTime(), nullable=False),
    sa.Column('decided_by', sa.String(length=128), nullable=True),
    sa.Column('decided_at', haven.db.types.UTCDateTime(), nullable=True),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.Column('used_at', haven.db.types.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('resource_guard_requests', schema=None) as batch_op:
        batch_op.create_index('ix_resource_guard_requests_vault', ['vault_id', 'status'], unique=False)
    op.create_table('resource_guard_audit',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('time', haven.db.types.UTCDateTime(), nullable=False),
    sa.Column('event', sa.String(length=32), nullable=False),
    sa.Column('principal', sa.String(length=128), nullable=False),
    sa.Column('guard_id', sa.String(length=32), nullable=True),
    sa.Column('vault_id', sa.String(length=32), nullable=True),
    sa.Column('vault_name', sa.String(length=50), nullable=True),
    sa.Column('subscription_id', sa.String(length=32), nullable=True),
    sa.Column('request_id', sa.String(length=32), nullable=True),
    sa.Column('operation', sa.String(length=64), nullable=True),
    sa.Column('code', sa.String(length=96), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('resource_guard_audit', schema=None) as batch_op:
        batch_op.create_index('ix_resource_guard_audit_guard', ['guard_id', 'time'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('resource_guard_audit', schema=None) as batch_op:
        batch_op.drop_index('ix_resource_guard_audit_guard')
    op.drop_table('resource_guard_audit')
    with op.batch_alter_table('resource_guard_requests', schema=None) as batch_op:
        batch_op.drop_index('ix_resource_guard_requests_vault')
    op.drop_table('resource_guard_requests')
    op.drop_table('vault_resource_guards')
    op.drop_table('resource_guard_approvers')
    op.drop_table('resource_guards')
