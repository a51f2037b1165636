"""key vault: vaults, key versions, secret versions, access policies

Revision ID: 0100
Revises: 0001
Create Date: 2026-11-22 05:00:00
"""
from alembic import op
import sqlalchemy as sa
import haven.db.types


revision = '0100'
down_revision = '0001'
branch_labels = ('keyvault',)
depends_on = None


def upgrade() -> None:
    op.create_table('key_vaults',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('subscription_id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=24), nullable=False),
    sa.Column('region', sa.String(length=64), nullable=False),
    sa.Column('retention_days', sa.Integer(), nullable=False),
    sa.Column('purge_protection', sa.Boolean(), nullable=False),
    sa.Column('created_at', haven.db.types.UTCDateTime(), nullable=False),
    sa.Column('deleted_at', haven.db.types.UTCDateTime(), nullable=True),
    sa.Column('purge_at', haven.db.types.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['subscription_id'], ['subscriptions.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('subscription_id', 'name', name='uq_key_vaults_subscription_name')
    )
    op.create_table('key_vault_keys',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('vault_id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=127), nullable=False),
    sa.Column('version', sa.String(length=32), nullable=False),
    sa.Column('object_id', sa.String(length=32), nullable=False),
    sa.Column('kty', sa.String(length=8), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('protection', sa.String(length=8), nullable=False),
    sa.Column('material', sa.LargeBinary(), nullable=True),
    sa.Column('public', sa.Text(), nullable=True),
    sa.Column('hsm_ref', sa.JSON(), nullable=True),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('tags', sa.JSON(), nullable=False),
    sa.Column('created_at', haven.db.types.UTCDateTime(), nullable=False),
    sa.Column('deleted_at', haven.db.types.UTCDateTime(), nullable=True),
    sa.Column('purge_at', haven.db.types.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['vault_id'], ['key_vaults.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('vault_id', 'name', 'version', name='uq_key_vault_keys_version')
    )
    op.create_index('ix_key_vault_keys_vault_id', 'key_vault_keys', ['vault_id'], unique=False)
    op.create_table('key_vault_secrets',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('vault_id', sa.String(length=32), nullable=False),
    sa.Column('name', sa.String(length=127), nullable=False),
    sa.Column('version', sa.String(length=32), nullable=False),
    sa.Column('object_id', sa.String(length=32), nullable=False),
    sa.Column('value', sa.LargeBinary(), nullable=False),
    sa.Column('content_type', sa.String(length=255), nullable=True),
    sa.Column('tags', sa.JSON(), nullable=False),
    sa.Column('created_at', haven.db.types.UTCDateTime(), nullable=False),
    sa.Column('deleted_at', haven.db.types.UTCDateTime(), nullable=True),
    sa.Column('purge_at', haven.db.types.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['vault_id'], ['key_vaults.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('vault_id', 'name', 'version', name='uq_key_vault_secrets_version')
    )
    op.create_index('ix_key_vault_secrets_vault_id', 'key_vault_secrets', ['vault_id'], unique=False)
    op.create_table('key_vault_access_policies',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('vault_id', sa.String(length=32), nullable=False),
    sa.Column('principal_id', sa.String(length=32), nullable=False),
    sa.Column('key_permissions', sa.JSON(), nullable=False),
    sa.Column('secret_permissions', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['vault_id'], ['key_vaults.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['principal_id'], ['principals.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('vault_id', 'principal_id', name='uq_key_vault_access_policies_principal')
    )
    op.create_index('ix_key_vault_access_policies_vault_id', 'key_vault_access_policies', ['vault_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_key_vault_access_policies_vault_id', table_name='key_vault_access_policies')
    op.drop_table('key_vault_access_policies')
    op.drop_index('ix_key_vault_secrets_vault_id', table_name='key_vault_secrets')
    op.drop_table('key_vault_secrets')
    op.drop_index('ix_key_vault_keys_vault_id', table_name='key_vault_keys')
    op.drop_table('key_vault_keys')
    op.drop_table('key_vaults')
