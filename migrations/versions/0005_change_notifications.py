"""Postgres triggers that NOTIFY `ired_changes` when what the cached reads show changes.

The API server listens (ired_dcd/services/change_feed.py) and keeps the job list, comparisons and
signed-in users in memory until a notification says they changed. The payload is a topic:

- users:   a user was added, renamed, or got or lost a token;
- jobs:    a job, run or tag changed (the job list shows all three, owner names included);
- results: a run entered or left `succeeded` or its final metrics changed, or results were imported.

Progress updates of running runs notify `jobs` only, so comparisons stay cached during training.
SQLite has no NOTIFY: there the reads are not cached and this revision does nothing.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 22:30:00.000000

"""
from typing import Sequence, Union

from alembic import op

# revision identifiers, used by Alembic.
revision: str = '0005'
down_revision: Union[str, Sequence[str], None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

CHANNEL = 'ired_changes'

FUNCTIONS = {
    # statement-level: one notification per statement (and Postgres folds repeats within a transaction)
    'ired_notify_users': f"PERFORM pg_notify('{CHANNEL}', 'users'); PERFORM pg_notify('{CHANNEL}', 'jobs');",
    'ired_notify_jobs': f"PERFORM pg_notify('{CHANNEL}', 'jobs');",
    'ired_notify_results': f"PERFORM pg_notify('{CHANNEL}', 'results');",
    # row-level: only a row that is or was succeeded changes a comparison
    'ired_notify_runs': f"""
        PERFORM pg_notify('{CHANNEL}', 'jobs');
        IF (TG_OP <> 'INSERT' AND OLD.state = 'succeeded')
           OR (TG_OP <> 'DELETE' AND NEW.state = 'succeeded') THEN
            IF TG_OP <> 'UPDATE' OR OLD.state IS DISTINCT FROM NEW.state
               OR OLD.final_metrics::text IS DISTINCT FROM NEW.final_metrics::text THEN
                PERFORM pg_notify('{CHANNEL}', 'results');
            END IF;
        END IF;""",
}
TRIGGERS = [  # (table, function, level)
    ('users', 'ired_notify_users', 'STATEMENT'),
    ('jobs', 'ired_notify_jobs', 'STATEMENT'),
    ('job_tags', 'ired_notify_jobs', 'STATEMENT'),
    ('imported_results', 'ired_notify_results', 'STATEMENT'),
    ('runs', 'ired_notify_runs', 'ROW'),
]


def upgrade() -> None:
    """Upgrade schema."""
    if op.get_bind().dialect.name != 'postgresql':
        return
    for name, body in FUNCTIONS.items():
        op.execute(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {body} RETURN NULL; END $$"
        )
    for table, function, level in TRIGGERS:
        op.execute(
            f"CREATE TRIGGER {function}_{table} AFTER INSERT OR UPDATE OR DELETE ON {table} "
            f"FOR EACH {level} EXECUTE FUNCTION {function}()"
        )


def downgrade() -> None:
    """Downgrade schema."""
    if op.get_bind().dialect.name != 'postgresql':
        return
    for table, function, _level in TRIGGERS:
        op.execute(f"DROP TRIGGER {function}_{table} ON {table}")
    for name in FUNCTIONS:
        op.execute(f"DROP FUNCTION {name}()")
