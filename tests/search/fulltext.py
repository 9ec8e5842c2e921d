"""The databases' own full-text queries for a plan (SQLite FTS5 ``MATCH`` with ``bm25()``,
PostgreSQL ``@@`` with ``phraseto_tsquery``): the oracle that the matches and scores the
backend works out in the process are checked against."""

from __future__ import annotations

from typing import Any

from sqlalchemy import cast, func, literal_column, select, table
from sqlalchemy.dialects.postgresql import REGCONFIG, TSQUERY
from sqlalchemy.orm import Session

from marketplace.catalog.search.models import SearchDocument
from marketplace.catalog.search.scoring import WEIGHTS
from marketplace.catalog.search.text import AnyOf, Node, Phrase

D = SearchDocument.__table__
FTS = table("search_fts")


def fts5_query(node: Node) -> str:
    """The plan as an FTS5 query string: phrases in quotes, AND / OR."""
    if isinstance(node, Phrase):
        return '"' + " ".join(node.words).replace('"', '""') + '"'
    if isinstance(node, AnyOf):
        return "(" + " OR ".join(fts5_query(o) for o in node.options) + ")"
    return "(" + " AND ".join(fts5_query(p) for p in node.parts) + ")"


def tsquery(node: Node) -> Any:
    """The plan as a tsquery: ``phraseto_tsquery`` per phrase, ``&&`` / ``||``."""
    if isinstance(node, Phrase):
        return func.phraseto_tsquery(cast("english", REGCONFIG), " ".join(node.words))
    operator = "||" if isinstance(node, AnyOf) else "&&"
    children = node.options if isinstance(node, AnyOf) else node.parts
    result = tsquery(children[0])
    for child in children[1:]:
        result = result.op(operator, return_type=TSQUERY)(tsquery(child))
    return result


def database_matches(session: Session, plan: Node) -> dict[int, float | None]:
    """The documents the database's own full-text query finds: with FTS5's bm25 on SQLite,
    without a score on PostgreSQL (which has no bm25)."""
    if session.get_bind().dialect.name == "sqlite":
        rowid = literal_column("search_fts.rowid")
        statement = (
            select(rowid, -func.bm25(literal_column("search_fts"), *WEIGHTS))
            .select_from(FTS)
            .where(literal_column("search_fts").op("MATCH")(fts5_query(plan)))
        )
        return {int(i): float(s) for i, s in session.execute(statement)}
    vector = literal_column("search_documents.search_fts_vector")
    return dict.fromkeys(session.scalars(select(D.c.id).where(vector.op("@@")(tsquery(plan)))))
