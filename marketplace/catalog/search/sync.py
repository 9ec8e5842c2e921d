"""Delivering the outbox to Elasticsearch after a writing request.

The hook is registered only when ``SEARCH_BACKEND=elasticsearch``. Per request it costs one
dictionary lookup unless that request's session wrote outbox rows (``product_changed`` sets a
flag in ``session.info``); then one outbox batch is delivered when the response has been sent
(``response.call_on_close``), after the request's transaction committed. If Elasticsearch is
down the rows stay, and the hook leaves it alone for ``BACKOFF_SECONDS``; ``marketplace search
sync`` (run it from cron or a loop) delivers whatever is left.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from flask import Flask, Response, g

from .outbox import OUTBOX_PENDING

if TYPE_CHECKING:
    from ... import AppState

log = logging.getLogger(__name__)
BACKOFF_SECONDS = 30.0


def register_after_request(app: Flask, state: AppState) -> None:
    from . import get_backend

    retry_after = {"at": 0.0}

    def deliver() -> None:
        backend = get_backend(app)
        try:
            report = backend.sync(state.session_factory, max_batches=1, prune=False)  # type: ignore[attr-defined]
        except Exception:  # a hook must never break the response it follows
            log.exception("search outbox delivery failed")
            report = None
        if report is None or report.error:
            retry_after["at"] = time.monotonic() + BACKOFF_SECONDS
            if report is not None:
                log.warning("search outbox: %s (will retry)", report.error)

    def after_request(response: Response) -> Response:
        session = g.get("db_session")
        if session is None or not session.info.pop(OUTBOX_PENDING, False):
            return response
        if response.status_code < 400 and time.monotonic() >= retry_after["at"]:
            response.call_on_close(deliver)
        return response

    app.after_request(after_request)
