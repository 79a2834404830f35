"""Token times on users; the broker task of each run and when it was sent (the fair-share dispatcher).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 12:00:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('users') as batch:
        batch.add_column(sa.Column('token_issued_at', sa.DateTime(timezone=True), nullable=True, comment='when the current token was issued'))
        batch.add_column(sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True, comment='when the last token was revoked'))
    with op.batch_alter_table('runs') as batch:
        batch.add_column(sa.Column('task_id', sa.String(length=64), nullable=True, comment='broker task last sent for the run'))
        batch.add_column(sa.Column('dispatched_at', sa.DateTime(timezone=True), nullable=True, comment='when it was sent; NULL: in the database only'))
        batch.create_index(batch.f('ix_runs_task_id'), ['task_id'], unique=False)
    # runs waiting in the queue before this revision were sent to the broker when they were submitted
    op.execute("UPDATE runs SET dispatched_at = created_at WHERE state IN ('queued', 'running')")


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('runs') as batch:
        batch.drop_index(batch.f('ix_runs_task_id'))
        batch.drop_column('dispatched_at')
        batch.drop_column('task_id')
    with op.batch_alter_table('users') as batch:
        batch.drop_column('revoked_at')
        batch.drop_column('token_issued_at')
