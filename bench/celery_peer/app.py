"""The Celery app the peer worker runs: `celery -A bench.celery_peer.app worker`."""

from __future__ import annotations

import os

from celery import Celery  # type: ignore[import-untyped]

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

app = Celery("bench", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    worker_send_task_events=False,
    task_send_sent_event=False,
    result_expires=3600,
)


@app.task(name="bench.noop")  # type: ignore[untyped-decorator]
def noop() -> None:
    """The trivial task: the whole cost is the framework's."""
    return None
