"""Each quote line carries the same price-variance verdict as the public price check."""

from __future__ import annotations


def test_a_quote_line_carries_the_price_checks_verdict(client, priced_shop):
    gloves = priced_shop.offers["gloves_a"]
    response = client.post(
        "/api/v1/quotes",
        json={
            "lines": [{"offer_id": gloves.id, "quantity": 1}],
            "payment_method": "purchase_order",
        },
        headers=priced_shop.buyer.headers,
    )
    assert response.status_code == 201, response.get_json()
    line = response.get_json()["lines"][0]
    check = client.get(
        "/api/v1/price-check",
        query_string={"product": gloves.product_id, "unit_price": line["unit_price_pence"]},
    )
    assert check.status_code == 200, check.get_json()
    expected = check.get_json()
    cheaper = expected.pop("cheaper_offer")
    assert line["price_verdict"] == expected
    # Four trusts paid 4.00, 4.50, 5.00 and 5.50p a glove: 5.5p is above the median (4.75p),
    # and the benchmark (p10) is 4.15p.
    assert line["price_verdict"]["verdict"] == "above_median"
    assert line["price_verdict"]["median_pence"] == 4.75
    assert line["price_verdict"]["benchmark_pence"] == 4.15
    assert line["price_verdict"]["percentile"] == 87.5
    assert line["cheaper_offer"]["offer_id"] == cheaper["offer_id"]
