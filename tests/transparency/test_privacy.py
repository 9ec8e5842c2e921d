"""No personal data in any public output: budget holders with distinctive names, e-mail
addresses, budget references and delivery addresses place budget-paid orders (enough of them
for the PHB aggregate to be published); then every public endpoint, page and download is
fetched, and none of those strings, nor their ids, appears anywhere."""

from __future__ import annotations

import gzip
import re

from marketplace.orders.models import CardPaymentStatus, PaymentMethod, SupplierOrderStatus
from marketplace.transparency import downloads

HOLDERS = 6


def _secrets(world, product_offers) -> tuple[list[str], list[str]]:
    """Make the data; return (strings that must never be published, ocids of trust orders)."""
    offer_a, offer_b = product_offers
    secrets: list[str] = []
    for n in range(HOLDERS):
        holder = world.holder(
            name=f"Zebedee Quuxworth-{n}", email=f"zebedee.quux{n}@phb-private.example"
        )
        budget = world.budget(holder, reference=f"PHB-SECRET-REF-{n}")
        order = world.order(
            world.commissioner,
            holder,
            [(offer_a, 1), (offer_b, 2)],
            payment_method=PaymentMethod.BUDGET,
            budget=budget,
            address={"line1": f"{n} Secretgarden Lane", "postcode": f"ZZ9 {n}QX"},
        )
        world.publish_placed(order.id)  # the orders service will call these for every order
        for so in order.supplier_orders:
            world.update_supplier_order(
                so.id, status=SupplierOrderStatus.DISPATCHED, dispatched_at=so.created_at
            )
            world.publish_event(so.id, "dispatched")
        secrets += [
            holder.user.name,
            holder.user.email,
            holder.user.id,
            budget.id,
            budget.reference,
            f"{n} Secretgarden Lane",
            f"ZZ9 {n}QX",
            order.id,
            order.quote_id,
            *(so.id for so in order.supplier_orders),
            *(line.id for so in order.supplier_orders for line in so.lines),
        ]
    # Staff are people too: who placed a trust order, who changed a price.
    secrets += [buyer.user.email for buyer in world.buyers]
    secrets += [world.sme.user.email, world.large.user.email]
    ocids = []
    for i, trust in enumerate(world.trusts):
        order = world.order(
            trust,
            world.buyers[i],
            [(offer_a, 3)],
            payment_method=PaymentMethod.CARD if i == 0 else PaymentMethod.PURCHASE_ORDER,
        )
        world.publish_placed(order.id)
        so = order.supplier_orders[0]
        world.dispatch(so.id, capture=i == 0)
        if i == 0:
            world.update_supplier_order(
                so.id,
                refunded_pence=100,
                payment={"refunded_pence": 100, "status": CardPaymentStatus.PARTIALLY_REFUNDED},
            )
            world.publish_event(so.id, "refunded")
        secrets.append(order.quote_id)
        ocids.append(f"ocds-mkt000-{order.id}")
    return secrets, ocids


def _crawl(client, first_url: str, key: str) -> list[str]:
    bodies, url = [], first_url
    while url:
        response = client.get(url)
        if response.status_code == 204:
            break
        assert response.status_code == 200, url
        bodies.append(response.get_data(as_text=True))
        body = response.get_json()
        nxt = body.get("links", {}).get("next") if key == "releases" else None
        if key == "changes":
            url = f"/api/v1/changes?cursor={body['next_cursor']}" if body["has_more"] else None
        else:
            url = nxt.removeprefix("http://127.0.0.1:8000") if nxt else None
    return bodies


def test_no_personal_data_in_any_public_output(world, client, app):
    bandage = world.product(name="Cohesive bandage", category_code="33141113")
    stocking = world.product(name="Anti-embolism stocking", category_code="MKT-HOSIERY-AE")
    offers = (world.offer(world.sme, bandage, 250), world.offer(world.large, stocking, 900))
    for i, trust in enumerate(world.trusts):
        world.purchase(trust, bandage, quantity=10, total_pence=2500 + 100 * i, ref=f"p{i}")
    secrets, ocids = _secrets(world, offers)

    outputs: dict[str, str] = {}

    def fetch(url: str, **kwargs) -> None:
        response = client.get(url, **kwargs)
        assert response.status_code == 200, (url, response.status_code)
        data = response.get_data()
        if response.headers.get("Content-Encoding") == "gzip":
            data = gzip.decompress(data)
        outputs[url + repr(kwargs)] = data.decode()

    # Every public GET in the API description (those without a security requirement).
    spec = client.get("/api/v1/openapi.json").get_json()
    public = [
        path
        for path, operations in spec["paths"].items()
        if "get" in operations and not operations["get"].get("security")
    ]
    covered = set()
    ids = {
        "{product_id}": [bandage.id, stocking.id],
        "{offer_id}": [o.id for o in offers],
        "{ocid}": ocids,
        "{ods}": [t.ods_code for t in world.trusts],
        "{dataset}.{fmt}": [f"{d}.{f}" for d in downloads.DATASETS for f in ("csv", "jsonl")],
    }
    for path in public:
        params = re.findall(r"\{[^}]+\}(?:\.\{[^}]+\})?", path)
        if not params:
            urls = [path]
        else:
            (param,) = params
            urls = [path.replace(param, value) for value in ids[param]]
        for url in urls:
            if url.endswith("/price-check"):
                url += f"?product={bandage.id}&unit_price=2.5"
            fetch(url)
        covered.add(path)
    assert "/api/v1/open-data/downloads/{dataset}.{fmt}" in covered
    assert "/api/v1/ocds/records/{ocid}" in covered

    # CSV variants, gzip variants, every page of the feeds, and the HTML pages.
    for dataset in downloads.DATASETS:
        fetch(f"/api/v1/open-data/downloads/{dataset}.csv", headers={"Accept-Encoding": "gzip"})
    fetch("/api/v1/open-data/phb-spending?format=csv")
    fetch("/api/v1/price-variance?format=csv")
    for i, body in enumerate(_crawl(client, "/api/v1/ocds/releases?limit=1", "releases")):
        outputs[f"releases page {i}"] = body
    for i, body in enumerate(_crawl(client, "/api/v1/changes?limit=2", "changes")):
        outputs[f"changes page {i}"] = body
    for url in (
        "/",
        "/?q=bandage",
        "/?q=stocking",
        "/open-data",
        f"/products/{bandage.id}",
        f"/products/{stocking.id}",
    ):
        fetch(url)

    # The PHB aggregate is there (six people), so the test looks where the data would be.
    assert '"people":6' in outputs["/api/v1/open-data/phb-spending{}"].replace(" ", "")
    assert len(outputs) > 40
    everything = "\n".join(outputs.values())
    assert all(ocid in everything for ocid in ocids)  # the trust orders are published
    leaks = [
        (secret, where) for secret in secrets for where, text in outputs.items() if secret in text
    ]
    assert not leaks, leaks[:10]
