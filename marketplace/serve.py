"""Run the app under gunicorn from Python (``marketplace serve`` and ``marketplace demo``)."""

from __future__ import annotations

import multiprocessing
from typing import Any

from gunicorn.app.base import BaseApplication


class _Gunicorn(BaseApplication):
    def __init__(self, options: dict[str, Any]):
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        from . import create_app

        return create_app()


def _on_starting(_server: Any) -> None:
    from .metrics import clear_multiprocess_dir

    clear_multiprocess_dir()


def _child_exit(_server: Any, worker: Any) -> None:
    from .metrics import worker_exited

    worker_exited(worker.pid)


def _post_worker_init(worker: Any) -> None:
    from .catalog.search import warm_up

    warm_up(worker.wsgi)


def run_gunicorn(*, host: str, port: int, workers: int | None) -> None:
    options = {
        "bind": f"{host}:{port}",
        "workers": workers or min(multiprocessing.cpu_count() * 2 + 1, 8),
        "timeout": 30,
        "accesslog": "-",
        "errorlog": "-",
        # as in gunicorn.conf.py: metrics from every worker (PROMETHEUS_MULTIPROC_DIR)
        "on_starting": _on_starting,
        "child_exit": _child_exit,
        "post_worker_init": _post_worker_init,  # as in gunicorn.conf.py
    }
    _Gunicorn(options).run()
