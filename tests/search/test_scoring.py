"""bm25 computed in the process (SQLite): every score equals FTS5's own ``bm25()`` of the same
match, for words, phrases, alternatives and repeated words, and stays equal after text changes,
which patch the kept postings instead of fetching them again."""

from __future__ import annotations

import random

import numpy as np
import pytest
from sqlalchemy import func, literal_column, select, text
from sqlalchemy.orm import Session

from marketplace.catalog.models import OfferStatus
from marketplace.catalog.search import get_backend, scoring
from marketplace.catalog.search.base import SearchQuery
from marketplace.catalog.search.cache import read_generation
from marketplace.catalog.search.scoring import WEIGHTS, TermIndex, phrase_terms
from marketplace.catalog.search.sql import SqlSearchBackend
from tests.support import statements

pytestmark = pytest.mark.usefixtures("sqlite_only")

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


@pytest.fixture
def sqlite_only(session_factory):
    if session_factory.kw["bind"].dialect.name != "sqlite":
        pytest.skip("bm25 in the process is the SQLite backend's; PostgreSQL ranks with ts_rank")


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


def fts5_bm25(session: Session, backend: SqlSearchBackend, plan) -> dict[int, float]:
    dialect = backend._dialect(session)
    rowid = literal_column("search_fts.rowid")
    statement = (
        select(rowid, -func.bm25(literal_column("search_fts"), *WEIGHTS))
        .select_from(dialect.fts)
        .where(literal_column("search_fts").op("MATCH")(dialect.render(plan)))
    )
    return {int(i): float(s) for i, s in session.execute(statement)}


def in_process(session: Session, backend: SqlSearchBackend, plan) -> dict[int, float]:
    columns = backend.columns.at(session, read_generation(session))
    dialect = backend._dialect(session)
    ids, scores = dialect.scored(session, plan, columns)
    return dict(zip(ids.tolist(), scores.tolist(), strict=True))


def assert_scores_are_bm25(session_factory, backend: SqlSearchBackend) -> int:
    """Every query's in-process scores equal FTS5's; how many matches were compared."""
    compared = 0
    with session_factory() as session:
        for q in QUERIES:
            plan = backend._plan(session, SearchQuery(q=q))
            expected = fts5_bm25(session, backend, plan)
            got = in_process(session, backend, plan)
            assert got.keys() == expected.keys(), q
            ids = sorted(expected)
            np.testing.assert_allclose(
                [got[i] for i in ids], [expected[i] for i in ids], rtol=1e-12, err_msg=q
            )
            compared += len(ids)
    return compared


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_scores_are_fts5_s_bm25_for_words_phrases_and_synonyms(app, cat, session_factory, seed):
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
    fetched = [s for s in seen if "search_fts_instances" in s]
    assert fetched == []  # every term was kept, and patched with the changed documents
    # A fresh process's index, read whole, holds the same postings as the patched one.
    with session_factory() as session:
        patched = backend.columns.at(session, read_generation(session)).terms
        fresh = TermIndex().prepare(session)
        assert patched.ids.tolist() == fresh.ids.tolist()
        assert patched.lengths.tolist() == fresh.lengths.tolist()
        assert patched.total == fresh.total
        for term, postings in patched.terms.items():
            again = scoring._term_postings(session, term)
            assert postings.ids.tolist() == again.ids.tolist(), term
            assert postings.places.tolist() == again.places.tolist(), term


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
    assert phrase_terms("anti-embolism Stockings") == ("anti", "embol", "stock")
    assert phrase_terms("Café wheel-chairs") == ("cafe", "wheel", "chair")
    assert phrase_terms("!!") == ()
    with session_factory() as session:
        created = session.scalar(text("SELECT sql FROM sqlite_master WHERE name = 'search_fts'"))
    tokenizer = created[created.index("tokenize=") :].rstrip(")")
    assert tokenizer in scoring._TOKENIZER_TABLE


def test_a_phrase_s_next_term_is_looked_up_from_the_shorter_side():
    keys = np.array([10, 20, 30, 40], dtype=np.int64)
    many = np.array([1, 11, 12, 31, 41, 50, 60], dtype=np.int64)
    few = np.array([21, 41], dtype=np.int64)
    assert scoring._followed(keys, many, 1).tolist() == [True, False, True, True]
    assert scoring._followed(keys, few, 1).tolist() == [False, True, False, True]
    assert scoring._followed(keys[:0], few, 1).tolist() == []
