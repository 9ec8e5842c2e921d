"""Query analysis (synonyms file, plans, edit distance, exact ids) and the search CLI."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import delete, func, select

from marketplace import cli
from marketplace.catalog.search.models import SearchDocument, SearchTerm
from marketplace.catalog.search.text import (
    AllOf,
    AnyOf,
    Phrase,
    best_corrections,
    build_plan,
    edits1,
    gtin_in_query,
    load_synonyms,
    mpn_key,
    osa_distance,
    parse_synonyms,
)


def test_the_maintained_synonyms_file_parses_and_covers_the_brief():
    synonyms = load_synonyms()
    groups = {frozenset(" ".join(p) for p in r.sources) for r in synonyms.rules if not r.explicit}

    def together(*terms):
        return any(set(terms) <= g for g in groups)

    assert together("dvt stockings", "anti embolism stockings")
    assert together("wheel chair", "wheelchair")
    assert together("alexa", "smart speaker", "voice assistant")
    assert together("gloves", "examination gloves")
    assert together("stocking", "hose", "hosiery")
    explicit = {
        " ".join(s): [" ".join(t) for t in r.targets]
        for r in synonyms.rules
        if r.explicit
        for s in r.sources
    }
    assert explicit["stkn"] == ["stocking"]


@pytest.mark.parametrize("line", ["lonely", "a => ", "=> b", "a => b => c", " , "])
def test_malformed_synonym_lines_are_reported_with_their_number(line):
    with pytest.raises(ValueError, match="line 2"):
        parse_synonyms(f"# comment\n{line}\n")


def test_plan_expands_multi_word_synonyms_and_keeps_the_original_words():
    synonyms = parse_synonyms("wheel chair, wheelchair\nstkn => stocking\n")
    plan = build_plan("Wheel chairs for adults", synonyms)
    assert plan == AllOf(
        (
            AnyOf(
                (
                    AllOf((Phrase(("wheel",)), Phrase(("chairs",)))),
                    # the phrase "wheel chair" adds nothing to the words ANDed: dropped
                    Phrase(("wheelchair",)),
                )
            ),
            Phrase(("adults",)),
        )
    )
    # An explicit rule replaces the word.
    assert build_plan("stkn", synonyms) == Phrase(("stocking",))
    assert build_plan("the of", synonyms) is None


def test_plan_drops_alternatives_that_the_typed_words_already_cover():
    synonyms = parse_synonyms("gloves, examination gloves, exam gloves\n")
    assert build_plan("gloves", synonyms) == Phrase(("gloves",))
    assert build_plan("examination gloves", synonyms) == AnyOf(
        (AllOf((Phrase(("examination",)), Phrase(("gloves",)))), Phrase(("gloves",)))
    )


def test_plan_adds_spelling_corrections_as_alternatives():
    synonyms = parse_synonyms("a b, c\n")
    plan = build_plan("stokings", synonyms, corrector=lambda words: {"stokings": ["stockings"]})
    assert plan == AnyOf((Phrase(("stokings",)), Phrase(("stockings",))))


def test_edit_distance():
    assert osa_distance("wheelchiar", "wheelchair") == 1  # a transposition is one edit
    assert osa_distance("stokings", "stockings") == 1
    assert osa_distance("glove", "gloves") == 1
    assert osa_distance("abc", "xyz", limit=1) == 2
    assert "wheelchair" in edits1("wheelchiar")
    assert best_corrections("wheelchiar", ["wheelchairs", "armchair", "wheelchair"]) == [
        "wheelchair",
        "wheelchairs",
    ]
    assert best_corrections("dresing", ["dressing", "dressings"]) == ["dressing"]


def test_exact_identifiers():
    assert gtin_in_query("5012345678900") == "05012345678900"
    assert gtin_in_query("05012345678900") == "05012345678900"
    assert gtin_in_query("5012345678901") is None  # bad check digit
    assert gtin_in_query("501 2345 678900") == "05012345678900"
    assert gtin_in_query("gloves") is None
    assert mpn_key("ng-100 m") == "NG100M"
    assert mpn_key("a-1") is None


# --- the CLI ------------------------------------------------------------------------------


@pytest.fixture
def runner(app, monkeypatch):
    settings = app.extensions["marketplace"].settings
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("SEARCH_BACKEND", "sql")
    monkeypatch.setattr(cli, "_state", None)
    yield CliRunner()
    if cli._state is not None:
        cli._state.engine.dispose()


def test_reindex_rebuilds_the_sql_documents(runner, cat, db):
    acme = cat.supplier("Acme")
    cat.product("Nitrile gloves", "18424300", [(acme, 650)], units_per_pack=100)
    cat.product("Walking frame", "33141720", [(acme, 4500)])
    with db.begin():
        db.execute(delete(SearchTerm))
        doc = db.scalar(select(SearchDocument).where(SearchDocument.name == "Walking frame"))
        doc.best_pack_price_pence = 1  # drifted
    result = runner.invoke(cli.main, ["search", "reindex"])
    assert result.exit_code == 0, result.output
    assert "2 searchable products of 2" in result.output
    db.expire_all()
    assert db.scalar(select(func.count()).select_from(SearchDocument)) == 2
    doc = db.scalar(select(SearchDocument).where(SearchDocument.name == "Walking frame"))
    assert doc.best_pack_price_pence == 4500
    assert db.scalar(select(SearchTerm.term).where(SearchTerm.term == "walking")) == "walking"


def test_sync_with_the_sql_backend_has_nothing_to_do(runner):
    result = runner.invoke(cli.main, ["search", "sync"])
    assert result.exit_code == 0
    assert "nothing to sync" in result.output
