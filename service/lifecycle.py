"""Readiness state of one worker: ready once workflows are loaded, not ready while draining."""

from __future__ import annotations

from dataclasses import dataclass

from service.app_state import StateKey

# On SIGTERM, time kept between uvicorn's graceful timeout and gunicorn's for the app's shutdown
# (close clients, flush traces) before the master would SIGKILL the worker.
SHUTDOWN_MARGIN_S = 2.0


@dataclass
class Lifecycle:
    workflows_loaded: bool = False
    draining: bool = False

    @property
    def ready(self) -> bool:
        return self.workflows_loaded and not self.draining

    def start_draining(self) -> None:
        self.draining = True


LIFECYCLE: StateKey[Lifecycle] = StateKey("lifecycle", Lifecycle)
