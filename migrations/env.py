"""Alembic environment: the database comes from the application's settings (DATABASE_URL)."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from marketplace import config as config_module
from marketplace.db import UTCDateTime, make_engine
from marketplace.models import metadata

alembic_config = context.config
settings = alembic_config.attributes.get("settings") or config_module.from_env()

# Objects the migrations create by hand and SQLAlchemy cannot describe (FTS5 virtual tables and
# their shadow tables, PostgreSQL search indexes). Autogenerate must leave them alone.
UNMANAGED_PREFIXES = ("search_fts", "ix_search_")


def include_object(obj, name, type_, reflected, compare_to):
    return not (name and name.startswith(UNMANAGED_PREFIXES))


def render_item(type_, obj, autogen_context):
    """Render the project's column types as plain SQLAlchemy types, so revisions do not import
    application code."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if type_ == "type" and isinstance(obj, sa.JSON):
        autogen_context.imports.add("from sqlalchemy.dialects import postgresql")
        return "sa.JSON().with_variant(postgresql.JSONB(), 'postgresql')"
    return False


def run_migrations() -> None:
    engine = make_engine(settings)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            include_object=include_object,
            render_item=render_item,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    context.configure(url=settings.database_url, target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations()
