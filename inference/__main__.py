"""``python -m inference``: see :mod:`inference.cli`."""

from __future__ import annotations

from inference.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
