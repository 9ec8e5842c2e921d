"""Full-text matches shared by every process through Redis (with ``REDIS_URL``).

Each process keeps a query's matches while the text stands (``cache.py``, part ``ranked`` /
``matched``), but a worker that starts, or any worker after a text change, would ask the
full-text index again for every query, one worker after another: for a broad word by relevance
that is the most expensive statement a search runs (bm25 or ts_rank of every match). Here the
first process to ask files the answer, the matches' document ids and their scores, under the
query's plan and the **text version** (``cache.read_text_version``), which every process reads
alike and which moves only when some document's text changes; the others take it from Redis.

An entry is only ever read under the text version it was computed at, so it cannot be stale;
old versions' entries are left to expire (``TTL_SECONDS``). Redis is an optimisation only: when
it fails, searches go on without it (one warning, then no attempt for ``BACKOFF_SECONDS``).
"""

from __future__ import annotations

import hashlib
import logging
import struct
import time
from typing import Any

import numpy as np

from .cache import Generation
from .text import Node

log = logging.getLogger(__name__)

TTL_SECONDS = 3600
BACKOFF_SECONDS = 30.0
TIMEOUT_SECONDS = 0.2
FORMAT = 1  # of the key and the value: a change of either changes it
_HEADER = struct.Struct("<QB")  # number of matches; 1 when scores follow the ids


def encode(ids: np.ndarray, scores: np.ndarray | None) -> bytes:
    """Ids as little-endian int64, then scores as float64 when ranked."""
    body = ids.astype("<i8").tobytes()
    if scores is not None:
        body += scores.astype("<f8").tobytes()
    return _HEADER.pack(len(ids), scores is not None) + body


def decode(value: bytes) -> tuple[np.ndarray, np.ndarray | None]:
    n, ranked = _HEADER.unpack_from(value)
    expected = _HEADER.size + n * (16 if ranked else 8)
    if len(value) != expected:
        raise ValueError(f"shared matches of {len(value)} bytes, expected {expected}")
    ids = np.frombuffer(value, dtype="<i8", count=n, offset=_HEADER.size).astype(np.int64)
    if not ranked:
        return ids, None
    scores = np.frombuffer(value, dtype="<f8", count=n, offset=_HEADER.size + 8 * n)
    return ids, scores.astype(np.float64)


class SharedMatches:
    """Matches in Redis under (database dialect, plan, ranked or not, text version)."""

    def __init__(self, client: Any, prefix: str, ttl: int = TTL_SECONDS):
        self.client = client
        self.prefix = prefix
        self.ttl = ttl
        self._retry_at = 0.0

    @classmethod
    def from_url(cls, url: str, prefix: str) -> SharedMatches:
        import redis

        client = redis.Redis.from_url(
            url, socket_connect_timeout=TIMEOUT_SECONDS, socket_timeout=TIMEOUT_SECONDS
        )
        return cls(client, prefix)

    def key(self, dialect: str, plan: Node, ranked: bool, text_version: Generation) -> str:
        what = repr((FORMAT, dialect, ranked, text_version, plan)).encode()
        return f"{self.prefix}:search-matches:{hashlib.sha256(what).hexdigest()}"

    def get(self, key: str) -> tuple[np.ndarray, np.ndarray | None] | None:
        """The matches filed under ``key``, or None (none there, or Redis unavailable)."""
        value = self._call(self.client.get, key)
        if value is None:
            return None
        try:
            return decode(value)
        except (ValueError, struct.error) as error:
            log.warning("shared search matches under %s unreadable: %s", key, error)
            return None

    def put(self, key: str, ids: np.ndarray, scores: np.ndarray | None) -> None:
        self._call(self.client.set, key, encode(ids, scores), ex=self.ttl)

    def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        import redis

        if time.monotonic() < self._retry_at:
            return None
        try:
            return method(*args, **kwargs)
        except redis.RedisError as error:
            self._retry_at = time.monotonic() + BACKOFF_SECONDS
            log.warning(
                "shared search matches unavailable, searching without them for %.0f s: %s",
                BACKOFF_SECONDS,
                error,
            )
            return None
