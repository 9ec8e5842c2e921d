"""Spelling corrections against the word list (``search_terms``): every query word is checked
and, when it is not a known word, given its candidate corrections in one statement, on SQLite
(the word list probed with every string one edit away) and PostgreSQL (pg_trgm similarity)."""

from __future__ import annotations

import pytest
from sqlalchemy import insert

from marketplace.catalog.search import get_backend
from marketplace.catalog.search.models import SearchTerm
from tests.support import statements

WORDS = ["compression", "dressing", "dressings", "stockings", "stocking", "wheelchair"]


@pytest.fixture
def word_list(session_factory):
    with session_factory.begin() as session:
        session.execute(insert(SearchTerm), [{"term": w} for w in WORDS])


def corrections(app, session_factory, words: list[str]) -> tuple[dict, list[str]]:
    backend = get_backend(app)
    with session_factory() as session:
        session.connection()  # the transaction begun: only the lookups are counted
        with statements(session.get_bind()) as seen:
            found = backend.corrections(session, backend._dialect(session), words)
    return found, seen


def test_each_unknown_word_gets_its_closest_known_words_in_one_statement(
    app, session_factory, word_list
):
    found, seen = corrections(app, session_factory, ["dresing", "stockings", "wheelchiar", "zzzz"])
    # A known word is never corrected; one with no candidate within reach is left alone.
    assert found.keys() == {"dresing", "wheelchiar"}
    assert found["dresing"][0] == "dressing"
    assert found["wheelchiar"] == ["wheelchair"]
    assert len(seen) == 1


def test_no_word_to_check_costs_no_statement(app, session_factory, word_list):
    assert corrections(app, session_factory, []) == ({}, [])


def test_known_words_alone_get_no_correction(app, session_factory, word_list):
    found, seen = corrections(app, session_factory, ["dressing", "stocking"])
    assert found == {}
    assert len(seen) == 1


def test_postgresql_offers_candidates_down_to_the_backend_s_similarity_threshold(
    app, session_factory, word_list, is_postgres
):
    """Two transposed pairs: within the two edits a long word may be corrected by, and
    trigram-similar to "compression" by 0.26, which pg_trgm's default threshold (0.3) would not
    offer. The threshold is set in the lookup's own statement."""
    if not is_postgres:
        pytest.skip("pg_trgm's similarity is PostgreSQL's; SQLite probes single edits")
    found, seen = corrections(app, session_factory, ["compersison"])
    assert found == {"compersison": ["compression"]}
    assert len(seen) == 1


def test_a_search_with_two_misspelt_words_finds_what_both_corrections_find(cat, client):
    acme = cat.supplier("Acme")
    stockings = cat.product("Compression stockings class 2", "MKT-HOSIERY-COMP", [(acme, 1800)])
    cat.product("Compression bandage", "33141113", [(acme, 900)])
    cat.product("Cotton stockings", "33141110", [(acme, 1500)])
    body = client.get("/api/v1/search", query_string={"q": "compresion stokings"}).get_json()
    assert [item["id"] for item in body["items"]] == [stockings]
