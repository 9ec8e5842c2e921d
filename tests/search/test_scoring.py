"""Ranked full-text queries worked out in the process (``scoring.py``): on SQLite the matches
and scores are FTS5's own (``MATCH``, ``bm25()``); on PostgreSQL the matches are the tsvector
query's (``@@``) and the scores a plain reference bm25 over the documents' lexemes. Both hold
for words, phrases, alternatives and repeated words, and after text changes, which patch the
kept postings instead of fetching them again."""

from __future__ import annotations

import math
import random
from collections import defaultdict

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from marketplace.catalog.models import OfferStatus, Product
from marketplace.catalog.search import get_backend, scoring
from marketplace.catalog.search.base import SearchQuery
from marketplace.catalog.search.cache import read_generation
from marketplace.catalog.search.documents import rebuild_all
from marketplace.catalog.search.outbox import product_changed
from marketplace.catalog.search.scoring import WEIGHTS, TermIndex
from marketplace.catalog.search.sql import SqlSearchBackend
from marketplace.catalog.search.text import AllOf, AnyOf, Phrase
from tests.search.fulltext import database_matches
from tests.support import statements

WORDS = [
    "foam", "dressing", "dressings", "silicone", "border", "gloves", "nitrile", "examination",
    "wheel", "chair", "wheelchair", "stockings", "anti", "embolism", "compression", "hosiery",
    "sterile", "pad", "adhesive", "bandage", "tubular", "catheter", "foley", "smart", "speaker",
]  # fmt: skip
QUERIES = [
    "dressing", "foam dressing", "wheel chair", "wheelchair", "gloves", "dvt stockings",
    "anti-embolism stockings", "compression hosiery", "smart speaker", "alexa", "pad pad",
    "silicone border dressing", "catheter", "nitrile examination gloves", "sterile",
]  # fmt: skip


def dialect_of(session: Session) -> str:
    return session.get_bind().dialect.name


def sentence(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def random_catalogue(cat, seed: int, products: int = 40) -> tuple[object, list[str]]:
    """A supplier and the ids of its products (random names, brands and descriptions)."""
    rng = random.Random(seed)
    acme = cat.supplier("Acme")
    categories = ["33141110", "18424300", "33193120", "MKT-HOSIERY-AE", "MKT-VOICE"]
    return acme, [
        cat.product(
            sentence(rng, 1, 6).capitalize(),
            rng.choice(categories),
            [(acme, 100 + i)],
            brand=sentence(rng, 0, 2) or None,
            description=sentence(rng, 0, 25) or None,
        )
        for i in range(products)
    ]


def reference_bm25(session: Session, plan) -> dict[int, float]:
    """bm25 of every matching document, document by document, from the tsvectors' lexemes
    (PostgreSQL; the phrase rules of ``phraseto_tsquery``, FTS5's formula and its rule for the
    phrases under an AND not matched in full)."""
    rows = session.execute(
        text(
            "SELECT d.id, u.lexeme, p, w FROM search_documents d "
            "CROSS JOIN LATERAL unnest(d.search_fts_vector) AS u "
            "CROSS JOIN LATERAL unnest(u.positions, u.weights) AS x(p, w)"
        )
    ).all()
    places: dict[int, dict[str, dict[int, str]]] = defaultdict(lambda: defaultdict(dict))
    for document, lexeme, position, weight in rows:
        places[document][lexeme][position] = weight
    lengths = {d: len(lexemes) for d, lexemes in places.items()}
    n, average = len(lengths), sum(lengths.values()) / len(lengths)
    weight_of = dict(zip("ABCD", WEIGHTS, strict=True))
    all_phrases = list(scoring.phrases(plan))
    phrasings = []
    for phrase in all_phrases:
        terms = session.execute(
            text(
                "SELECT u.lexeme, p FROM unnest(to_tsvector('english', :t)) AS u "
                "CROSS JOIN LATERAL unnest(u.positions) AS p ORDER BY p, u.lexeme"
            ),
            {"t": " ".join(phrase.words)},
        ).all()
        phrasings.append(terms)

    def frequency(document: int, terms) -> float:
        if not terms:
            return 0.0
        (first, start), rest = terms[0], terms[1:]
        held = places[document]
        return sum(
            weight_of[weight]
            for position, weight in held.get(first, {}).items()
            if all(position + p - start in held.get(t, {}) for t, p in rest)
        )

    frequencies = {d: [frequency(d, terms) for terms in phrasings] for d in places}
    hits = [sum(1 for d in places if frequencies[d][i] > 0) for i in range(len(phrasings))]
    idfs = [max(math.log((n - h + 0.5) / (h + 0.5)), 0) or 1e-6 for h in hits]

    def matches(node, f, i):  # (matched or None for no term, next phrase number)
        if isinstance(node, Phrase):
            return (None if not phrasings[i] else f[i] > 0), i + 1
        start, found = i, []
        for child in node.parts if isinstance(node, AllOf) else node.options:
            m, i = matches(child, f, i)
            if m is not None:
                found.append(m)
        if not found:
            return None, i
        if isinstance(node, AnyOf):
            return any(found), i
        if not all(found):
            f[start:i] = [0.0] * (i - start)
            return False, i
        return True, i

    scores = {}
    for document, f in frequencies.items():
        if matches(plan, f, 0)[0]:
            norm = 1.2 * (1 - 0.75 + 0.75 * lengths[document] / average)
            scores[document] = sum(
                idf * (x * 2.2) / (x + norm) for idf, x in zip(idfs, f, strict=True)
            )
    return scores


def in_process(session: Session, backend: SqlSearchBackend, plan) -> dict[int, float]:
    columns = backend.columns.at(session, read_generation(session))
    ids, scores = backend._full_text(session, plan, True, columns)
    unranked, _none = backend._full_text(session, plan, False, columns)
    assert unranked.tolist() == ids.tolist()
    return dict(zip(ids.tolist(), scores.tolist(), strict=True))


def assert_scores_are_bm25(session_factory, backend: SqlSearchBackend) -> int:
    """Every query's matches are the database's, and the scores FTS5's (SQLite) or the
    reference's (PostgreSQL); how many matches were compared."""
    compared = 0
    with session_factory() as session:
        for q in QUERIES:
            plan = backend._plan(session, SearchQuery(q=q))
            expected = database_matches(session, plan)
            got = in_process(session, backend, plan)
            assert got.keys() == expected.keys(), q
            if dialect_of(session) != "sqlite":
                expected = reference_bm25(session, plan)
                assert expected.keys() == got.keys(), q
            ids = sorted(expected)
            np.testing.assert_allclose(
                [got[i] for i in ids], [expected[i] for i in ids], rtol=1e-12, err_msg=q
            )
            compared += len(ids)
    return compared


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_matches_and_scores_for_words_phrases_and_synonyms(app, cat, session_factory, seed):
    random_catalogue(cat, seed)
    backend = SqlSearchBackend(get_backend(app).synonyms, get_backend(app).read_engine)
    assert assert_scores_are_bm25(session_factory, backend) > 100


def test_text_changes_patch_the_kept_postings_and_scores_stay_bm25(app, cat, session_factory):
    acme, products = random_catalogue(cat, 7)
    shared = get_backend(app)
    backend = SqlSearchBackend(shared.synonyms, shared.read_engine)
    engine = shared.read_engine or session_factory.kw["bind"]
    assert_scores_are_bm25(session_factory, backend)
    # Text changes of every kind: a rename, a new description, a new product, one that
    # leaves search (its only offer paused) and one that comes back.
    cat.update_product(products[0], name="Foam foam dressing with silicone border")
    cat.update_product(products[1], description="wheel chair smart speaker " * 3)
    cat.product("Nitrile examination gloves, sterile", "18424300", [(acme, 450)])
    cat.update_offer(products[2], acme, status=OfferStatus.PAUSED)
    cat.update_offer(products[3], acme, status=OfferStatus.PAUSED)
    cat.update_offer(products[3], acme, status=OfferStatus.ACTIVE)
    with statements(engine) as seen:
        assert_scores_are_bm25(session_factory, backend)
    fetched = [s for s in seen if "search_fts_instances" in s or "search_fts_postings" in s]
    assert fetched == []  # every term was kept, and patched with the changed documents
    # A fresh process's index, read whole, holds the same postings as the patched one.
    with session_factory() as session:
        patched = backend.columns.at(session, read_generation(session)).terms
        source = backend._dialect(session).postings
        fresh = TermIndex().prepare(session, source)
        assert patched.ids.tolist() == fresh.ids.tolist()
        assert patched.lengths.tolist() == fresh.lengths.tolist()
        assert patched.total == fresh.total
        for term, postings in patched.terms.items():
            again = source.term(session, term)
            for name in ("ids", "places", "columns"):
                assert getattr(postings, name).tolist() == getattr(again, name).tolist(), term


def test_a_price_change_keeps_the_same_index(app, cat, session_factory):
    acme, products = random_catalogue(cat, 11, products=10)
    shared = get_backend(app)
    backend = SqlSearchBackend(shared.synonyms, shared.read_engine)
    with session_factory() as session:
        before = backend.columns.at(session, read_generation(session)).terms
    cat.update_offer(products[0], acme, pack_price_pence=999)
    with session_factory() as session:
        assert backend.columns.at(session, read_generation(session)).terms is before
    cat.update_product(products[0], name="Renamed foam dressing")
    with session_factory() as session:
        assert backend.columns.at(session, read_generation(session)).terms is not before


def test_an_index_never_used_builds_on_the_last_one_that_was():
    ready = TermIndex()
    ready._ready = True
    first = ready.after(np.array([5, 3]))
    second = first.after(np.array([7, 3]))  # ``first`` never worked out
    assert second._base is ready
    assert second._changed.tolist() == [3, 5, 7]
    assert TermIndex().after(np.array([1]))._base is None  # nothing to build on: read all


def test_kept_postings_are_bounded(app, cat, session_factory, monkeypatch):
    random_catalogue(cat, 5)
    monkeypatch.setattr(scoring, "MAX_KEPT", 50)
    shared = get_backend(app)
    backend = SqlSearchBackend(shared.synonyms, shared.read_engine)
    assert_scores_are_bm25(session_factory, backend)
    with session_factory() as session:
        kept = backend.columns.at(session, read_generation(session)).terms.terms
        # Each term is kept while under the bound; past it the kept ones are dropped first.
        largest = max(len(p) for p in kept.values())
        assert sum(len(p) for p in kept.values()) <= 50 + largest


def test_phrases_are_cut_into_terms_by_the_index_s_tokenizer(session_factory):
    with session_factory() as session:
        if dialect_of(session) == "sqlite":
            phrasing = scoring.FTS5.phrasing
            created = session.scalar(
                text("SELECT sql FROM sqlite_master WHERE name = 'search_fts'")
            )
            tokenizer = created[created.index("tokenize=") :].rstrip(")")
            assert tokenizer in scoring._TOKENIZER_TABLE
            assert phrasing(session, "anti-embolism Stockings") == (
                ("anti", 0), ("embol", 1), ("stock", 2)
            )  # fmt: skip
            assert phrasing(session, "Café wheel-chairs") == (
                ("cafe", 0), ("wheel", 1), ("chair", 2)
            )  # fmt: skip
        else:
            phrasing = scoring.TSVECTOR.phrasing
            assert phrasing(session, "anti-embolism Stockings") == (
                ("anti-embol", 1), ("anti", 2), ("embol", 3), ("stock", 4)
            )  # fmt: skip
            assert phrasing(session, "stockings for legs") == (("stock", 1), ("leg", 3))
        assert phrasing(session, "!!") == ()


def test_a_phrase_s_next_term_is_looked_up_from_the_shorter_side():
    keys = np.array([10, 20, 30, 40], dtype=np.int64)
    many = np.array([1, 11, 12, 31, 41, 50, 60], dtype=np.int64)
    few = np.array([21, 41], dtype=np.int64)
    assert scoring._followed(keys, many, 1).tolist() == [True, False, True, True]
    assert scoring._followed(keys, few, 1).tolist() == [False, True, False, True]
    assert scoring._followed(keys[:0], few, 1).tolist() == []


def test_a_full_rebuild_keeps_the_postings_in_step(app, cat, session_factory):
    """``marketplace search reindex`` rebuilds every document; on PostgreSQL the postings are
    then rewritten in one statement (the trigger stands aside meanwhile) and must equal the
    tsvectors' lexemes, in term order."""
    _acme, products = random_catalogue(cat, 13, products=20)
    with session_factory.begin() as session:
        rebuild_all(session)
        # The trigger is back in force for the rest of the rebuild's transaction.
        session.get(Product, products[0]).name = "Zebra crossing dressing"
        session.flush()
        product_changed(session, products[0])
    shared = get_backend(app)
    backend = SqlSearchBackend(shared.synonyms, shared.read_engine)
    assert assert_scores_are_bm25(session_factory, backend) > 20
    with session_factory() as session:
        if dialect_of(session) == "sqlite":
            return
        held = session.execute(
            text("SELECT term, document_id, places FROM search_fts_postings ORDER BY 1, 2")
        ).all()
        expected = session.execute(
            text(
                "SELECT u.lexeme, d.id, array_agg((CASE x.w WHEN 'A' THEN 0 WHEN 'B' THEN 1 "
                "WHEN 'C' THEN 2 ELSE 3 END) << 24 | x.p ORDER BY x.p) "
                "FROM search_documents d CROSS JOIN LATERAL unnest(d.search_fts_vector) AS u "
                "CROSS JOIN LATERAL unnest(u.positions, u.weights) AS x(p, w) "
                "GROUP BY 1, 2 ORDER BY 1, 2"
            )
        ).all()
        assert [(t, d, sorted(p)) for t, d, p in held] == [(t, d, list(p)) for t, d, p in expected]
        assert "zebra" in {t for t, _d, _p in held}


def test_long_texts_have_their_lengths_read_right(app, cat, session_factory):
    """A column of 128 or more tokens takes several bytes in FTS5's record of lengths (most
    significant first); a wrong decoding would shift every score through the average."""
    acme = cat.supplier("Acme")
    cat.product("Foam dressing", "33141110", [(acme, 100)], description="pad " * 200)
    cat.product("Foam pad", "33141110", [(acme, 120)], description="wound care " * 9000)
    cat.product("Silicone dressing", "33141110", [(acme, 130)], description="border")
    shared = get_backend(app)
    backend = SqlSearchBackend(shared.synonyms, shared.read_engine)
    assert assert_scores_are_bm25(session_factory, backend) >= 3
    with session_factory() as session:
        index = TermIndex().prepare(session, backend._dialect(session).postings)
        if dialect_of(session) == "sqlite":  # every token counts, category names too
            short, middle, long = sorted(index.lengths.tolist())
            assert short < 10
            assert 200 < middle < 220
            assert 18_000 < long < 18_020


def test_removing_documents_from_postings():
    postings = scoring.Postings.sorted(
        np.array([1, 1, 2, 3, 3, 3, 5]), np.arange(7), np.zeros(7, dtype=np.int64)
    )
    kept = postings.without(np.array([1, 3, 4]))  # 4 has none
    assert kept.ids.tolist() == [2, 5]
    assert kept.places.tolist() == [2, 6]
    assert postings.without(np.array([9])) is postings


def test_occurrences_of_documents_the_index_does_not_hold_are_ignored():
    """Postings read in another snapshot than the lengths (or left behind by a restore) must
    not move onto a neighbouring document or break the search."""

    class Source:
        def lengths(self, session, document_ids):
            return np.array([10, 20, 30]), np.array([3, 3, 3])

        def term(self, session, term):
            ids = {"pad": [10, 15, 30, 99]}.get(term, [])
            return scoring.Postings.sorted(
                np.array(ids, dtype=np.int64), np.zeros(len(ids)), np.zeros(len(ids))
            )

        def occurrences(self, session, document_ids, terms):
            return {}

        def phrasing(self, session, phrase):
            return ((phrase, 0),)

    ids, scores = TermIndex().matches(None, Phrase(("pad",)), Source())
    assert ids.tolist() == [10, 30]
    assert len(scores) == 2
