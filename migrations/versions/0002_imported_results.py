"""Imported results: runs made elsewhere, stored once per config, seed and tags.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 19:33:42.052472

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = '0002'
down_revision: Union[str, Sequence[str], None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('imported_results',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('row_key', sa.String(length=64), nullable=False, comment='sha256 of config, seed and tags'),
    sa.Column('config', sa.String(length=64), nullable=False, comment='canonical preset stem'),
    sa.Column('seed', sa.Integer(), nullable=False),
    sa.Column('tags', JSON, nullable=False, comment='sorted, unique'),
    sa.Column('metrics', JSON, nullable=False, comment='metric name → final value'),
    sa.Column('source', sa.String(length=255), nullable=True, comment='where the rows came from, e.g. a file name'),
    sa.Column('owner_id', sa.Integer(), nullable=False),
    sa.Column('imported_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_imported_results_owner_id_users'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_imported_results')),
    sa.UniqueConstraint('row_key', name=op.f('uq_imported_results_row_key'))
    )
    op.create_index(op.f('ix_imported_results_config'), 'imported_results', ['config'], unique=False)
    op.create_index(op.f('ix_imported_results_owner_id'), 'imported_results', ['owner_id'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index(op.f('ix_imported_results_owner_id'), table_name='imported_results')
    op.drop_index(op.f('ix_imported_results_config'), table_name='imported_results')
    op.drop_table('imported_results')
