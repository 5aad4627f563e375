"""Background work of evaluation: runs (chunked, resumable) and the canary watch (beat).

Platform work, like the registry's tasks: runs and promotions are not tenant
data. The usage records a run writes are written inside the charged
ministry's scope (:mod:`.runner`); the canary watch reads each ministry's
usage inside that ministry's scope (:mod:`.promotion`).
"""

from __future__ import annotations

from gennai.celery import app

ITEMS_PER_TASK = 10


@app.task(name="evaluation.run", ignore_result=True)
def run_evaluation(*, run_id: int) -> bool:
    """Answer the next ``ITEMS_PER_TASK`` pending items, then queue the rest as a new task.

    Short tasks keep a worker restart cheap; with ``acks_late`` (settings) a
    worker that dies mid-chunk gets the chunk redelivered, and finished items
    are skipped (:func:`apps.evaluation.runner.execute_run`).
    """
    from .runner import execute_run

    finished = execute_run(run_id, limit=ITEMS_PER_TASK)
    if not finished:
        run_evaluation.delay(run_id=run_id)
    return finished


@app.task(name="evaluation.promotion_watch", ignore_result=True)
def promotion_watch() -> dict[str, int]:
    """Check every canary promotion; roll back those over their thresholds (CELERY_BEAT_SCHEDULE)."""
    from .promotion import promotion_watch_all

    return promotion_watch_all()
