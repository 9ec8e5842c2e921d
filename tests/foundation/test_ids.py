"""Public ids: opaque, prefixed; purchase lines' ids also sort by creation."""

from __future__ import annotations

import re
import time
import uuid

from marketplace.db import new_id, new_ordered_id
from marketplace.pricing.models import PurchaseRecord

HEX_ID = re.compile(r"^pur_[0-9a-f]{32}$")


def test_random_ids_are_prefixed_and_unique():
    ids = {new_id("prd") for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"prd_[0-9a-f]{32}", i) for i in ids)


def test_ordered_ids_are_version_7_uuids_with_the_time_first():
    before = time.time_ns() // 1_000_000
    value = uuid.UUID(new_ordered_id("pur").removeprefix("pur_"))
    after = time.time_ns() // 1_000_000
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert before <= value.int >> 80 <= after


def test_ordered_ids_sort_by_creation_and_keep_74_random_bits():
    first = [new_ordered_id("pur") for _ in range(200)]
    time.sleep(0.002)
    later = [new_ordered_id("pur") for _ in range(200)]
    assert max(first) < min(later)
    assert len(set(first + later)) == 400
    values = [uuid.UUID(i[4:]).int for i in first]
    low = {v & (2**62 - 1) for v in values}
    high = {v >> 64 & 0xFFF for v in values}
    assert len(low) == 200  # within one millisecond, ids differ in their random bits
    assert len(high) > 150  # the 12 bits after the version are random too
    assert any(v >> 64 & 0xFFF != v & 0xFFF for v in values)  # nor copied from the low bits


def test_purchase_lines_get_ordered_ids():
    made = [PurchaseRecord.make_id() for _ in range(3)]
    assert all(HEX_ID.match(i) and uuid.UUID(i[4:]).version == 7 for i in made)
    record = PurchaseRecord(trust_id="org_x")
    assert uuid.UUID(record.id[4:]).version == 7
