"""Background work of evaluation: runs (chunked, resumable) and the canary watch (beat).

A platform suite's run is platform work, like the registry's tasks; a ministry
suite's run carries its ``ministry_id`` (queued by the service from the run's
own row, the only source of that scope), and the runner touches its rows only
inside that ministry's scope. The usage records a run writes are written inside
the charged ministry's scope (:mod:`.runner`); the canary watch reads each
ministry's usage inside that ministry's scope (:mod:`.promotion`).
"""

from __future__ import annotations

from gennai.celery import app

ITEMS_PER_TASK = 10


@app.task(name="evaluation.run", ignore_result=True)
def run_evaluation(*, run_id: int, ministry_id: int | None = None) -> bool:
    """Answer the next ``ITEMS_PER_TASK`` pending items, then queue the rest as a new task.

    Short tasks keep a worker restart cheap; with ``acks_late`` (settings) a
    worker that dies mid-chunk gets the chunk redelivered, and finished items
    are skipped (:func:`apps.evaluation.runner.execute_run`).
    """
    from .runner import execute_run

    finished = execute_run(run_id, limit=ITEMS_PER_TASK, ministry_id=ministry_id)
    if not finished:
        run_evaluation.delay(run_id=run_id, **({} if ministry_id is None else {"ministry_id": ministry_id}))
    return finished


@app.task(name="evaluation.promotion_watch", ignore_result=True)
def promotion_watch() -> dict[str, int]:
    """Check every canary promotion; roll back those over their thresholds (CELERY_BEAT_SCHEDULE)."""
    from .promotion import promotion_watch_all

    return promotion_watch_all()
