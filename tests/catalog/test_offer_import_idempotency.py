"""Idempotency-Key on the offer import: a retry of the same file and options replays the first
report and writes nothing more; the same key with another file or other options is a 422. The
multipart boundary, random in every request, does not make a retry "different"."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import func, select
from werkzeug.test import EnvironBuilder

from marketplace.accounts.models import Role
from marketplace.audit import AuditEvent
from marketplace.catalog.models import Offer, OfferPriceHistory, Product
from marketplace.idempotency import CHUNK_BYTES, IdempotencyKey, upload_fingerprint
from tests.catalog.test_offer_import import GOOD_ROWS, csv_bytes
from tests.support import assert_problem

URL = "/api/v1/offers/import"
FILE = csv_bytes(GOOD_ROWS)
# The same price list with the first row's price changed.
CHANGED_FILE = csv_bytes([GOOD_ROWS[0].replace(",391,", ",380,"), *GOOD_ROWS[1:]])


def multipart(
    boundary: str,
    files: dict[str, bytes],
    fields: dict[str, str] | None = None,
    filename: str = "prices.csv",
):
    """A multipart/form-data body with this boundary, and its content type."""
    crlf = b"\r\n"
    body = b""
    for name, value in (fields or {}).items():
        body += b"--" + boundary.encode() + crlf
        body += f'Content-Disposition: form-data; name="{name}"'.encode() + crlf + crlf
        body += value.encode() + crlf
    for name, data in files.items():
        body += b"--" + boundary.encode() + crlf
        body += (
            f'Content-Disposition: form-data; name="{name}"; filename="{filename}"'.encode() + crlf
        )
        body += b"Content-Type: text/csv" + crlf + crlf + data + crlf
    body += b"--" + boundary.encode() + b"--" + crlf
    return body, f"multipart/form-data; boundary={boundary}"


def upload(client, actor, data: bytes, *, key: str | None, query: str = "", boundary: str = ""):
    """Upload ``data`` as the multipart field ``file`` (with this boundary, or werkzeug's own
    random one), with ``key`` as the Idempotency-Key."""
    headers = {**actor.headers, **({"Idempotency-Key": key} if key is not None else {})}
    url = URL + (f"?{query}" if query else "")
    if boundary:
        body, content_type = multipart(boundary, {"file": data})
        return client.post(url, data=body, content_type=content_type, headers=headers)
    return client.post(
        url,
        data={"file": (io.BytesIO(data), "prices.csv")},
        content_type="multipart/form-data",
        headers=headers,
    )


def upload_raw(client, actor, data: bytes, *, key: str | None, query: str = ""):
    headers = {**actor.headers, **({"Idempotency-Key": key} if key is not None else {})}
    url = URL + (f"?{query}" if query else "")
    return client.post(url, data=data, content_type="text/csv", headers=headers)


def state(db) -> tuple[dict[str, int], list[tuple]]:
    """Row counts of everything an import writes, and every offer's listed values."""
    db.rollback()  # a fresh snapshot: end the read transaction, expire everything
    counts = {
        model.__name__: db.scalar(select(func.count()).select_from(model))
        for model in (Product, Offer, OfferPriceHistory, AuditEvent, IdempotencyKey)
    }
    offers = sorted(
        (o.supplier_id, o.supplier_sku, o.pack_price_pence, o.stock, o.min_order_qty)
        for o in db.scalars(select(Offer))
    )
    return counts, offers


def assert_replay(response, first) -> None:
    assert response.status_code == first.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Idempotent-Replayed"] == "true"
    assert response.mimetype == "application/json"
    assert response.get_data() == first.get_data()


def test_a_retry_replays_the_first_report_and_writes_nothing_more(client, db, supplier, existing):
    first = upload(client, supplier, FILE, key="prices-2024-06")
    assert first.status_code == 200, first.get_json()
    assert "Idempotent-Replayed" not in first.headers
    assert (first.get_json()["created_offers"], first.get_json()["unchanged"]) == (3, 0)
    # Someone changes an offer meanwhile: running the file again would put its price back.
    offer = db.scalar(select(Offer).where(Offer.supplier_sku == "NG-1"))
    patched = client.patch(
        f"/api/v1/offers/{offer.id}", json={"pack_price_pence": 450}, headers=supplier.headers
    )
    assert patched.status_code == 200, patched.get_json()
    before = state(db)
    assert before[0]["IdempotencyKey"] == 1

    retry = upload(client, supplier, FILE, key="prices-2024-06")

    assert_replay(retry, first)
    assert retry.get_json()["created_offers"] == 3  # the first report, not "unchanged: 3"
    assert state(db) == before  # no offer, price-history or audit row more; the price stays 450
    assert ("NG-1", 450) in [(sku, price) for _s, sku, price, *_ in before[1]]


def test_the_same_file_with_another_multipart_boundary_is_a_replay(client, db, supplier, existing):
    one, _ = multipart("boundary-one-1111", {"file": FILE})
    two, _ = multipart("another-boundary-22222222", {"file": FILE})
    assert one != two  # the raw bodies differ
    first = upload(client, supplier, FILE, key="k-boundary", boundary="boundary-one-1111")
    assert first.status_code == 200, first.get_json()
    before = state(db)
    retry = upload(client, supplier, FILE, key="k-boundary", boundary="another-boundary-22222222")
    assert_replay(retry, first)
    # ... and werkzeug's own (random) boundary too.
    assert_replay(upload(client, supplier, FILE, key="k-boundary"), first)
    assert state(db) == before


def test_the_same_key_with_another_file_is_422_and_writes_nothing(client, db, supplier, existing):
    assert upload(client, supplier, FILE, key="k-1").status_code == 200
    before = state(db)
    response = upload(client, supplier, CHANGED_FILE, key="k-1")
    body = assert_problem(response, 422, code="idempotency-key-reused")
    assert "Idempotency-Key" in body["errors"]
    assert state(db) == before  # the changed price was not applied
    # The changed file with a new key is a new import.
    report = upload(client, supplier, CHANGED_FILE, key="k-2").get_json()
    assert (report["updated_offers"], report["unchanged"]) == (1, 2)


def test_the_same_key_with_another_dry_run_option_is_422(client, db, supplier, existing):
    first = upload(client, supplier, FILE, key="k-dry", query="dry_run=true")
    assert first.status_code == 200
    assert first.get_json()["dry_run"] is True
    before = state(db)
    assert before[0]["Offer"] == 0  # the dry run wrote no offer
    for query in ("", "dry_run=false"):
        response = upload(client, supplier, FILE, key="k-dry", query=query)
        assert_problem(response, 422, code="idempotency-key-reused")
        assert state(db) == before
    assert_replay(upload(client, supplier, FILE, key="k-dry", query="dry_run=true"), first)
    assert state(db) == before


def test_a_dry_run_then_the_real_import_with_another_key(client, db, supplier, existing):
    before = state(db)
    dry = upload(client, supplier, FILE, key="check-1", query="dry_run=true")
    assert dry.status_code == 200
    assert dry.get_json()["created_offers"] == 3
    counts, offers = state(db)
    assert offers == before[1]
    assert counts == before[0] | {"IdempotencyKey": 1}  # only the key was stored
    real = upload(client, supplier, FILE, key="import-1")
    assert real.status_code == 200
    assert "Idempotent-Replayed" not in real.headers
    assert (real.get_json()["dry_run"], real.get_json()["created_offers"]) == (False, 3)
    assert len(state(db)[1]) == 3


def test_an_operator_retry_must_name_the_same_supplier(client, db, factory, supplier, existing):
    other = factory.actor(Role.SUPPLIER)
    operator = factory.actor(Role.OPERATOR)
    query = f"supplier_id={supplier.org.id}"
    first = upload(client, operator, FILE, key="op-1", query=query)
    assert first.status_code == 200, first.get_json()
    assert first.get_json()["supplier_id"] == supplier.org.id
    before = state(db)
    assert_replay(upload(client, operator, FILE, key="op-1", query=query), first)
    response = upload(client, operator, FILE, key="op-1", query=f"supplier_id={other.org.id}")
    assert_problem(response, 422, code="idempotency-key-reused")
    assert state(db) == before


@pytest.mark.parametrize("key", ["", "has space", "x" * 256, "ünïcode"])
@pytest.mark.parametrize("raw", [False, True], ids=["multipart", "text/csv"])
def test_an_invalid_key_is_a_4xx_naming_the_header_and_writes_nothing(
    client, db, supplier, existing, key, raw
):
    before = state(db)
    key = key.encode().decode("latin-1")  # as a client would send the bytes
    send = upload_raw if raw else upload
    response = send(client, supplier, FILE, key=key)
    body = assert_problem(response, 422, code="invalid-idempotency-key")
    assert "Idempotency-Key" in body["errors"]
    assert state(db) == before


def test_a_failed_first_attempt_stores_nothing_and_the_key_can_be_retried(
    client, db, supplier, existing
):
    before = state(db)
    malformed = csv_bytes(GOOD_ROWS, header="gtin,colour")
    assert_problem(upload(client, supplier, malformed, key="retry-me"), 400, code="malformed-csv")
    assert state(db) == before  # not even the key
    good = upload(client, supplier, FILE, key="retry-me")
    assert good.status_code == 200
    assert "Idempotent-Replayed" not in good.headers
    assert good.get_json()["created_offers"] == 3
    assert_replay(upload(client, supplier, FILE, key="retry-me"), good)


def test_keys_belong_to_their_user(client, db, factory, supplier, existing):
    first = upload(client, supplier, FILE, key="shared-key")
    other = factory.actor(Role.SUPPLIER)
    theirs = upload(client, other, FILE, key="shared-key")
    assert theirs.status_code == 200
    assert "Idempotent-Replayed" not in theirs.headers
    assert theirs.get_json()["supplier_id"] == other.org.id
    assert theirs.get_json()["created_offers"] == 3
    # The same key and another file is no reuse either: it is another user's key.
    colleague = factory.actor(Role.SUPPLIER, supplier.org)
    mine = upload(client, colleague, CHANGED_FILE, key="shared-key")
    assert mine.status_code == 200
    assert "Idempotent-Replayed" not in mine.headers
    assert mine.get_json()["updated_offers"] == 1
    assert {s for s, *_ in state(db)[1]} == {supplier.org.id, other.org.id}
    assert_replay(upload(client, supplier, FILE, key="shared-key"), first)


def test_a_raw_csv_body_with_a_key_is_imported_and_replayed(client, db, supplier, existing):
    first = upload_raw(client, supplier, FILE, key="raw-1")
    assert first.status_code == 200, first.get_json()
    assert first.get_json()["created_offers"] == 3  # the view read the body after it was hashed
    before = state(db)
    assert_replay(upload_raw(client, supplier, FILE, key="raw-1"), first)
    assert_problem(
        upload_raw(client, supplier, CHANGED_FILE, key="raw-1"), 422, code="idempotency-key-reused"
    )
    assert state(db) == before


def test_without_a_key_nothing_is_stored_and_nothing_is_replayed(client, db, supplier, existing):
    first = upload(client, supplier, FILE, key=None)
    again = upload(client, supplier, FILE, key=None)
    assert "Idempotent-Replayed" not in again.headers
    assert (first.get_json()["created_offers"], again.get_json()["unchanged"]) == (3, 3)
    assert state(db)[0]["IdempotencyKey"] == 0


def test_the_openapi_document_lists_the_header_with_the_query_arguments(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    parameters = spec["paths"][URL]["post"]["parameters"]
    assert {(p["in"], p["name"]) for p in parameters} == {
        ("query", "dry_run"),
        ("query", "supplier_id"),
        ("header", "Idempotency-Key"),
    }
    key = next(p for p in parameters if p["name"] == "Idempotency-Key")
    assert key["schema"]["maxLength"] == 255
    assert "multipart/form-data" in spec["paths"][URL]["post"]["requestBody"]["content"]


# --- upload_fingerprint ---------------------------------------------------------------------


def form_request(
    files: dict[str, bytes],
    fields: dict[str, str] | None = None,
    *,
    boundary: str = "b-1",
    query: str = "",
    filename: str = "prices.csv",
):
    from flask import Request

    body, content_type = multipart(boundary, files, fields, filename)
    environ = EnvironBuilder(
        path=URL, method="POST", query_string=query, data=body, content_type=content_type
    ).get_environ()
    return Request(environ)


def test_upload_fingerprint_ignores_the_boundary_but_not_the_files_or_fields():
    big = b"x" * (3 * CHUNK_BYTES + 17)  # read in several chunks
    base = upload_fingerprint(form_request({"file": big}, {"note": "a"}))
    assert base == upload_fingerprint(form_request({"file": big}, {"note": "a"}, boundary="zz-9"))
    assert base == upload_fingerprint(form_request({"file": big}, {"note": "a"}, filename="p.txt"))
    assert base != upload_fingerprint(form_request({"file": big[:-1] + b"y"}, {"note": "a"}))
    assert base != upload_fingerprint(form_request({"file": big + b"x"}, {"note": "a"}))
    assert base != upload_fingerprint(form_request({"file": big}, {"note": "b"}))
    assert base != upload_fingerprint(form_request({"file": big}, {"note": "a", "x": ""}))
    assert base != upload_fingerprint(form_request({"other": big}, {"note": "a"}))
    assert base != upload_fingerprint(form_request({"file": big}))
    assert base != upload_fingerprint(form_request({"file": big}, {"note": "a"}, query="x=1"))
    # Form fields are taken in a canonical order.
    two = upload_fingerprint(form_request({"file": b"1"}, {"a": "1", "b": "2"}))
    assert two == upload_fingerprint(form_request({"file": b"1"}, {"b": "2", "a": "1"}))
    # Where a field's text ends and a file begins is part of the fingerprint.
    assert upload_fingerprint(form_request({"f": b"1"}, {"a": "b"})) != upload_fingerprint(
        form_request({"f": b"1"}, {"ab": ""})
    )


def test_upload_fingerprint_leaves_the_files_to_be_read_again():
    request = form_request({"file": FILE, "extra": b"second file"})
    upload_fingerprint(request)
    assert request.files["file"].stream.read() == FILE
    assert request.files["extra"].stream.read() == b"second file"


def test_upload_fingerprint_of_a_raw_body_spools_it_for_the_view():
    from flask import Request

    def raw(data: bytes) -> Request:
        return Request(
            EnvironBuilder(
                path=URL, method="POST", data=data, content_type="text/csv"
            ).get_environ()
        )

    request = raw(FILE)
    digest = upload_fingerprint(request)
    assert request.stream.read() == FILE
    assert digest == upload_fingerprint(raw(FILE))
    assert digest != upload_fingerprint(raw(CHANGED_FILE))
    assert digest != upload_fingerprint(form_request({"file": FILE}))  # another request
