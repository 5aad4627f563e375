"""GPU-tier tooling for Gennai: serving profiles, planner, renderer, dev CPU server and benchmark.

This package deliberately has no Django dependency (DESIGN.md §2, §4): it is run by operators
and procurement officers on machines that have nothing but this repository and its venv.

Entry point: ``python -m inference {profiles,plan,render,serve-dev,bench}``; see ``docs/inference.md``.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
