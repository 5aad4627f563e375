"""Per-process circuit breaker for deployments (closed → open → half-open probe)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

FAILURE_THRESHOLD = 3
OPEN_SECONDS = 30.0


@dataclass
class _State:
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False


class CircuitBreaker:
    """Consecutive failures open the circuit; after ``open_seconds`` one probe may pass."""

    def __init__(self, *, threshold: int = FAILURE_THRESHOLD, open_seconds: float = OPEN_SECONDS) -> None:
        self.threshold = threshold
        self.open_seconds = open_seconds
        self._states: dict[int, _State] = {}
        self._lock = threading.Lock()

    def allow(self, deployment_id: int) -> bool:
        """May a request go to this deployment now? Claims the half-open probe if due."""
        with self._lock:
            state = self._states.get(deployment_id)
            if state is None or state.opened_at is None:
                return True
            if time.monotonic() - state.opened_at < self.open_seconds or state.probing:
                return False
            state.probing = True
            return True

    def is_open(self, deployment_id: int) -> bool:
        state = self._states.get(deployment_id)
        return bool(state and state.opened_at is not None)

    def success(self, deployment_id: int) -> None:
        with self._lock:
            self._states.pop(deployment_id, None)

    def failure(self, deployment_id: int) -> None:
        with self._lock:
            state = self._states.setdefault(deployment_id, _State())
            state.failures += 1
            if state.probing or state.failures >= self.threshold:
                state.opened_at = time.monotonic()
            state.probing = False

    def reset(self) -> None:
        with self._lock:
            self._states.clear()


breaker = CircuitBreaker()
