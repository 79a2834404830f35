"""Per-user quotas: GPU-hours of work queued or training, and jobs queued or running (NULL: the default).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 00:30:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision: str = '0007'
down_revision: Union[str, Sequence[str], None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('users') as batch:
        batch.add_column(sa.Column('gpu_hours_quota', sa.Double(), nullable=True, comment="GPU-hours of work queued or training at once; NULL: the server's default"))
        batch.add_column(sa.Column('queued_jobs_quota', sa.Integer(), nullable=True, comment="jobs queued or running at once; NULL: the server's default"))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('users') as batch:
        batch.drop_column('queued_jobs_quota')
        batch.drop_column('gpu_hours_quota')
