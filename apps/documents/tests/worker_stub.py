"""Imported by the test Celery worker (``--include``): a deterministic, optionally slow embedder.

The registry path of embeddings is apps/search's and tested there; the worker
tests here are about the pipeline (queues, retries, resumption), so the worker
process embeds with :func:`apps.documents.tests.conftest.fake_vector`, sleeping
``GENNAI_TEST_EMBED_DELAY`` seconds per batch so a test can kill it mid-document.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from apps.search import embeddings

from .conftest import fake_vector


def _embed_passages(*, ministry_id: int, texts: Sequence[str], level: int = 1) -> list[tuple[float, ...]]:
    time.sleep(float(os.environ.get("GENNAI_TEST_EMBED_DELAY", "0")))
    return [fake_vector(t) for t in texts]


embeddings.embed_passages = _embed_passages  # type: ignore[assignment]
