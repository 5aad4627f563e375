"""Golden-file comparison: ``UPDATE_GOLDEN=1`` rewrites the files instead of comparing."""

from __future__ import annotations

import os
from pathlib import Path

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"


def check_golden(name: str, actual: str) -> None:
    """Assert ``actual`` equals ``golden/<name>``, or rewrite it when UPDATE_GOLDEN=1."""
    path = GOLDEN_DIR / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
        return
    assert path.is_file(), f"missing golden file {path}; generate it with UPDATE_GOLDEN=1"
    expected = path.read_text(encoding="utf-8")
    assert actual == expected, f"{name} differs from its golden file; if intended, rerun with UPDATE_GOLDEN=1"
