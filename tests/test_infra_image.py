"""The application image carries what the code reads at run time (infra/docker/Dockerfile)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "infra" / "docker" / "Dockerfile").read_text(encoding="utf-8")
DOCKERIGNORE = (ROOT / "infra" / "docker" / "Dockerfile.dockerignore").read_text(encoding="utf-8")


def _runtime_stage() -> str:
    return DOCKERFILE.split(" AS runtime", 1)[1]


def test_the_elasticsearch_template_is_in_the_image() -> None:
    """apps/search/elastic.py reads infra/elasticsearch/chunks-template.json at run time."""
    from apps.search.elastic import TEMPLATE_PATH

    relative = TEMPLATE_PATH.relative_to(ROOT).parent.as_posix()
    assert re.search(rf"^COPY {re.escape(relative)}/ {re.escape(relative)}/$", _runtime_stage(), re.M)
    assert f"!{relative}/" in DOCKERIGNORE.splitlines()


def test_the_workers_can_ocr_japanese() -> None:
    """apps/documents/ocr.py runs Tesseract with its Japanese model on scanned pages."""
    runtime = _runtime_stage()
    assert "tesseract-ocr " in runtime and "tesseract-ocr-jpn" in runtime
    assert "rm -rf /var/lib/apt/lists/*" in runtime
