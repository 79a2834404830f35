"""What the broker holds right now: ids of tasks waiting for a worker, and of tasks a worker has taken.

The reconciler compares this with the database (the queue of record) to find tasks the broker lost.

- Redis (kombu's layout): waiting messages are in one list per priority step (`queue`,
  `queue\\x06\\x16N`); a message a worker took stays in the `unacked` hash until it is acknowledged,
  with the time it was taken in the `unacked_index` sorted set.
- The embedded filesystem queue: one file per waiting message; a taken message is gone.

Task ids are Celery's message ids (`headers.id`, set by the dispatcher), unique across queues.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ired_dcd.services.celery_app import app
from ired_dcd.settings import Settings


@dataclass(frozen=True)
class BrokerTasks:
    waiting: frozenset[str]
    taken: dict[str, float] = field(default_factory=dict)  # task id → when a worker took it (unix time)


def broker_tasks(settings: Settings) -> BrokerTasks:
    """The task ids of `settings.queue` in the broker; raises when the broker cannot be reached."""
    if settings.embedded:
        return _filesystem_tasks(settings)
    with app.connection_for_read() as connection:
        return _redis_tasks(connection.default_channel, settings.queue)


def _task_id(message: Any) -> str | None:
    headers = message.get("headers") if isinstance(message, dict) else None
    return headers.get("id") if isinstance(headers, dict) else None


def _redis_tasks(channel: Any, queue: str) -> BrokerTasks:
    keys = [queue, *(f"{queue}{channel.sep}{step}" for step in channel.priority_steps if step)]
    with channel.client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.lrange(key, 0, -1)
        pipe.hgetall(channel.unacked_key)
        pipe.zrange(channel.unacked_index_key, 0, -1, withscores=True)
        *lists, unacked, taken_at = pipe.execute()
    waiting = {_task_id(json.loads(raw)) for messages in lists for raw in messages}
    times = {_text(tag): score for tag, score in taken_at}
    taken: dict[str, float] = {}
    for tag, raw in unacked.items():
        task_id = _task_id(json.loads(raw)[0])
        if task_id is not None:
            taken[task_id] = times.get(_text(tag), 0.0)
    return BrokerTasks(waiting=frozenset(waiting - {None}), taken=taken)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _filesystem_tasks(settings: Settings) -> BrokerTasks:
    waiting = set()
    for path in settings.queue_dir.glob(f"*.{settings.queue}.msg"):
        try:
            waiting.add(_task_id(json.loads(path.read_bytes())))
        except (OSError, ValueError):  # taken by a worker while we read it
            continue
    return BrokerTasks(waiting=frozenset(waiting - {None}))


def tasks_in_training(timeout: float = 1.0) -> set[str]:
    """Ids of the tasks that live workers report as running (those that answer within `timeout`)."""
    replies = app.control.inspect(timeout=timeout).active() or {}
    return {task["id"] for tasks in replies.values() for task in tasks}
