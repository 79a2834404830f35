"""Why a run diverged (rule, diagnostic, value, threshold), and comparisons that see failed runs.

A comparison now counts each config's diverged and failed runs, so a run entering or leaving those
states notifies `results` too (the trigger of 0005 notified it for `succeeded` only).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 01:00:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = '0006'
down_revision: Union[str, Sequence[str], None] = '0005'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')
CHANNEL = 'ired_changes'


def _notify_runs(states: str) -> str:
    """The body of ired_notify_runs: `results` when a row is or was in one of `states`."""
    return f"""
        PERFORM pg_notify('{CHANNEL}', 'jobs');
        IF (TG_OP <> 'INSERT' AND OLD.state IN ({states}))
           OR (TG_OP <> 'DELETE' AND NEW.state IN ({states})) THEN
            IF TG_OP <> 'UPDATE' OR OLD.state IS DISTINCT FROM NEW.state
               OR OLD.final_metrics::text IS DISTINCT FROM NEW.final_metrics::text THEN
                PERFORM pg_notify('{CHANNEL}', 'results');
            END IF;
        END IF;"""


def _replace_notify_runs(states: str) -> None:
    op.execute(
        "CREATE OR REPLACE FUNCTION ired_notify_runs() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN {_notify_runs(states)} RETURN NULL; END $$"
    )


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('runs') as batch:
        batch.add_column(
            sa.Column('divergence', JSON, nullable=True, comment='why the run diverged: rule, diagnostic, value, step')
        )
    if op.get_bind().dialect.name == 'postgresql':
        _replace_notify_runs("'succeeded', 'diverged', 'failed'")


def downgrade() -> None:
    """Downgrade schema."""
    if op.get_bind().dialect.name == 'postgresql':
        _replace_notify_runs("'succeeded'")
    with op.batch_alter_table('runs') as batch:
        batch.drop_column('divergence')
