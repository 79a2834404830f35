"""Sweeps: a grid over settings of one preset, one job per grid point (jobs.sweep_id).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 03:45:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = '0008'
down_revision: Union[str, Sequence[str], None] = '0007'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        'sweeps',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('preset', sa.String(length=64), nullable=False),
        sa.Column('overrides', JSON, nullable=False, comment='overrides shared by every grid point'),
        sa.Column('grid', JSON, nullable=False, comment='field → the values it takes, in the order given'),
        sa.Column('seeds', JSON, nullable=False),
        sa.Column('owner_id', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_sweeps_owner_id_users'), ondelete='RESTRICT'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_sweeps')),
    )
    op.create_index(op.f('ix_sweeps_owner_id'), 'sweeps', ['owner_id'], unique=False)
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('sweep_id', sa.Integer(), nullable=True, comment='the sweep this job is a grid point of'))
        batch.create_index(batch.f('ix_jobs_sweep_id'), ['sweep_id'], unique=False)
        batch.create_foreign_key(batch.f('fk_jobs_sweep_id_sweeps'), 'sweeps', ['sweep_id'], ['id'], ondelete='SET NULL')


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('jobs') as batch:
        batch.drop_constraint(batch.f('fk_jobs_sweep_id_sweeps'), type_='foreignkey')
        batch.drop_index(batch.f('ix_jobs_sweep_id'))
        batch.drop_column('sweep_id')
    op.drop_index(op.f('ix_sweeps_owner_id'), table_name='sweeps')
    op.drop_table('sweeps')
