"""host shares: a subscription sees and acts only on VMs of hosts shared with it

Existing deployments keep what they use: every host run by the server's own agent (not remote, not
imported) is shared with every subscription (the default ``[server] share_own_host = "all"``), and
every host is shared with each subscription that has a protected item of one of its VMs. A remote
host whose VMs no subscription protects is shared with none until an Owner runs 'haven host share'.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-10 12:00:00
"""
from datetime import datetime, timezone
import uuid

from alembic import op
import sqlalchemy as sa
import haven.db.types


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('host_shares',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('host_id', sa.String(length=32), nullable=False),
    sa.Column('subscription_id', sa.String(length=32), nullable=False),
    sa.Column('created_at', haven.db.types.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['host_id'], ['hosts.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['subscription_id'], ['subscriptions.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('host_id', 'subscription_id')
    )
    bind = op.get_bind()
    pairs = set(bind.execute(sa.text(
        "SELECT h.id, s.id FROM hosts h CROSS JOIN subscriptions s "
        "WHERE (h.job_types IS NULL OR CAST(h.job_types AS TEXT) = 'null') AND h.adapter_url NOT LIKE 'imported:%'")).all())
    pairs |= set(bind.execute(sa.text(
        "SELECT DISTINCT vm.host_id, v.subscription_id FROM protected_items i "
        "JOIN virtual_machines vm ON vm.id = i.vm_id JOIN vaults v ON v.id = i.vault_id")).all())
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    shares = sa.table('host_shares', sa.column('id', sa.String), sa.column('host_id', sa.String),
                      sa.column('subscription_id', sa.String), sa.column('created_at', sa.DateTime))
    if pairs:
        op.bulk_insert(shares, [{"id": uuid.uuid4().hex, "host_id": h, "subscription_id": s, "created_at": now}
                                for h, s in sorted(pairs)])


def downgrade() -> None:
    op.drop_table('host_shares')
