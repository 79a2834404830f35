"""Per-job executor settings (the SLURM overrides of a job).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 10:00:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = '0003'
down_revision: Union[str, Sequence[str], None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(
            sa.Column('executor_options', JSON, nullable=True, comment='per-job executor settings, e.g. SLURM overrides')
        )


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('executor_options')
