"""NHS open procurement marketplace: the application factory."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import Flask
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from . import config as config_module
from .config import Settings
from .db import make_engine, make_session_factory


@dataclass
class AppState:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    readiness_probes: dict[str, Callable[[], Any]] = field(default_factory=dict)
    payment_gateway: Any = None
    metrics_registry: Any = None  # figures read at scrape time (metrics.scrape_registry)

    def read_session(self) -> Session:
        """A session for a request that only reads. On PostgreSQL its transactions are
        REPEATABLE READ, so that every statement of one sees one snapshot (a ranking's rows and
        its totals, a distribution and its trusts' rows); READ COMMITTED would give each
        statement its own, and a commit between two of them could mix states. A read-only
        transaction never fails to serialise at this level. SQLite's read transaction is one
        snapshot already."""
        if self.engine.dialect.name != "postgresql":
            return self.session_factory()
        if self._snapshot_engine is None:
            self._snapshot_engine = self.engine.execution_options(isolation_level="REPEATABLE READ")
        return self.session_factory(bind=self._snapshot_engine)

    _snapshot_engine: Engine | None = field(default=None, init=False, repr=False)


def create_app(config: Settings | Mapping[str, Any] | None = None) -> Flask:
    """Build the application.

    ``config`` is a ``Settings``, a mapping of overrides on top of the environment (keys are
    ``Settings`` field names, e.g. ``{"database_url": ...}``), or None for the environment alone.
    Raises ``ConfigError`` (one line naming the variable) on a bad setting.
    """
    if isinstance(config, Settings):
        settings = config_module.validate(config)
    else:
        settings = config_module.from_env()
        if config:
            settings = settings.with_overrides(**dict(config))

    from .web import configure_logging

    configure_logging(settings.log_level)
    app = Flask(__name__, instance_path=str(settings.instance_dir.resolve()))
    app.config["MAX_CONTENT_LENGTH"] = settings.max_content_length
    app.config["TESTING"] = settings.testing
    app.json.sort_keys = False  # type: ignore[attr-defined]

    from . import metrics

    engine = make_engine(settings)
    metrics.watch_pool(engine)
    session_factory = make_session_factory(engine)
    state = AppState(
        settings=settings,
        engine=engine,
        session_factory=session_factory,
        metrics_registry=metrics.scrape_registry(session_factory),
    )
    app.extensions["marketplace"] = state
    # Code that gets only a session reads these here: the settings (e.g. search's
    # product_changed) and the payment gateway (e.g. an approval decision cancelling a card).
    session_factory.configure(
        info={"settings": settings, "payment_gateway": lambda: state.payment_gateway}
    )

    from .orders.payments import gateway_from_settings

    state.payment_gateway = gateway_from_settings(settings)

    from . import errors, ops, ratelimit, transparency, web
    from .blueprints import all_blueprints
    from .openapi import init_api

    web.init_request_handling(app)
    ratelimit.init_app(app, settings)
    init_api(app, all_blueprints())
    errors.register_error_handlers(app)
    app.register_blueprint(ops.blp)

    from .catalog.search import init_app as init_search

    init_search(app, state)
    app.register_blueprint(transparency.pages_blueprint())
    return app
