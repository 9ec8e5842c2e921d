"""Loading the category tree leaves an audit trail: its PHB flags decide what a budget may buy,
so who changed a category, and what it was before, must be on record."""

from __future__ import annotations

from sqlalchemy import select

from marketplace.accounts.service import Principal
from marketplace.audit import AuditEvent
from marketplace.catalog import service as catalog
from marketplace.catalog.models import Category


def _events(session) -> list[AuditEvent]:
    return list(session.scalars(select(AuditEvent).where(AuditEvent.object_type == "category")))


def _flipped(rows: list[dict[str, str]], code: str, **values: str) -> list[dict[str, str]]:
    return [{**row, **values} if row["code"] == code else row for row in rows]


def test_each_category_created_is_an_audit_event(session_factory):
    rows = catalog.bundled_category_rows()
    with session_factory.begin() as session:
        assert catalog.load_categories(session, rows) == len(rows)
    with session_factory() as session:
        events = _events(session)
        ids = {c.code: c.id for c in session.scalars(select(Category))}
    assert [e.action for e in events] == ["category.create"] * len(rows)
    assert {e.object_id for e in events} == set(ids.values())
    assert {e.actor_label for e in events} == {catalog.CATEGORY_LOADER.label}
    first = next(e for e in events if e.object_id == ids[rows[0]["code"]])
    assert first.before is None
    assert first.after["code"] == rows[0]["code"]
    assert first.after["name"] == rows[0]["name"]
    assert first.after["phb_excluded"] == (rows[0]["phb_excluded"] == "true")


def test_a_changed_category_records_what_changed_and_an_unchanged_one_nothing(session_factory):
    rows = catalog.bundled_category_rows()
    code = rows[-1]["code"]
    was_excluded = rows[-1]["phb_excluded"] == "true"
    with session_factory.begin() as session:
        catalog.load_categories(session, rows)
    with session_factory.begin() as session:
        created = len(_events(session))
        assert catalog.load_categories(session, rows) == 0
    with session_factory() as session:
        assert len(_events(session)) == created  # the same tree again: nothing to record
    operator = Principal.system("operator on call")
    changed = _flipped(
        rows, code, phb_excluded="false" if was_excluded else "true", name="Renamed category"
    )
    with session_factory.begin() as session:
        catalog.load_categories(session, changed, operator)
    with session_factory() as session:
        events = _events(session)
        assert len(events) == created + 1
        events = [e for e in events if e.action != "category.create"]
        category_id = session.scalar(select(Category.id).where(Category.code == code))
    assert [(e.action, e.object_id, e.actor_label) for e in events] == [
        ("category.update", category_id, "operator on call")
    ]
    assert events[0].before == {"name": rows[-1]["name"], "phb_excluded": was_excluded}
    assert events[0].after == {"name": "Renamed category", "phb_excluded": not was_excluded}
