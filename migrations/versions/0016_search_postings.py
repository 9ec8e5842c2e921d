"""search: the full-text index's postings, readable by term

Revision ID: 0016_search
Revises: 0015_pricing
Create Date: 2026-12-03 12:30:00.000000

The SQL backend answers a ranked full-text query in the process from the index's postings
(``search/scoring.py``) instead of asking the database to rank every match. It reads them by
term:

- SQLite: ``search_fts_instances``, an ``fts5vocab`` table over ``search_fts`` (one row per
  token occurrence: term, document, column, offset). It stores nothing of its own.
- PostgreSQL: ``search_fts_postings`` (term, document id, places: weight << 24 | position, from
  ``search_fts_vector``), kept in step by a trigger on ``search_documents`` in the same
  transaction, as SQLite's triggers keep ``search_fts``; backfilled in term order, so that a
  term's rows sit together. ``marketplace search reindex`` rewrites it in term order too (the
  trigger stands aside while ``marketplace.search_postings`` is ``deferred``).
"""

from __future__ import annotations

from alembic import op

revision = "0016_search"
down_revision = "0015_pricing"
branch_labels = None
depends_on = None

# An occurrence's place: its weight (A-D: name, keywords, category, description) << 24 | its
# position in the document's tsvector.
POSTGRES = [
    "CREATE TABLE search_fts_postings ("
    "term text NOT NULL, document_id bigint NOT NULL, places integer[] NOT NULL, "
    "CONSTRAINT pk_search_fts_postings PRIMARY KEY (term, document_id))",
    "CREATE FUNCTION search_fts_postings_sync() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN "
    "IF current_setting('marketplace.search_postings', true) = 'deferred' THEN RETURN NULL; "
    "END IF; "
    "IF TG_OP IN ('UPDATE', 'DELETE') THEN "
    "DELETE FROM search_fts_postings WHERE document_id = OLD.id "
    "AND term = ANY(tsvector_to_array(OLD.search_fts_vector)); "
    "END IF; "
    "IF TG_OP IN ('INSERT', 'UPDATE') THEN "
    "INSERT INTO search_fts_postings (term, document_id, places) SELECT u.lexeme, NEW.id, "
    "ARRAY(SELECT (CASE x.w WHEN 'A' THEN 0 WHEN 'B' THEN 1 WHEN 'C' THEN 2 ELSE 3 END) << 24 "
    "| x.p FROM unnest(u.positions, u.weights) AS x(p, w)) "
    "FROM unnest(NEW.search_fts_vector) AS u; "
    "END IF; "
    "RETURN NULL; "
    "END $$",
    "CREATE TRIGGER search_fts_postings_sync "
    "AFTER INSERT OR DELETE OR UPDATE OF name, keywords, category_text, description "
    "ON search_documents FOR EACH ROW EXECUTE FUNCTION search_fts_postings_sync()",
    # No writer may add postings through the trigger while the backfill reads the documents.
    "LOCK TABLE search_documents IN SHARE MODE",
    "INSERT INTO search_fts_postings (term, document_id, places) SELECT u.lexeme, d.id, "
    "ARRAY(SELECT (CASE x.w WHEN 'A' THEN 0 WHEN 'B' THEN 1 WHEN 'C' THEN 2 ELSE 3 END) << 24 "
    "| x.p FROM unnest(u.positions, u.weights) AS x(p, w)) "
    "FROM search_documents d CROSS JOIN LATERAL unnest(d.search_fts_vector) AS u "
    "ORDER BY u.lexeme, d.id",
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE search_fts_instances USING fts5vocab(search_fts, instance)"
        )
        return
    for statement in POSTGRES:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS search_fts_instances")
        return
    op.execute("DROP TRIGGER IF EXISTS search_fts_postings_sync ON search_documents")
    op.execute("DROP FUNCTION IF EXISTS search_fts_postings_sync()")
    op.execute("DROP TABLE IF EXISTS search_fts_postings")
