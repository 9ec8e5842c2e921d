"""Full-text matches shared by every process through Redis (with ``REDIS_URL``).

Each process keeps a query's matches while the text stands (``cache.py``, part ``ranked`` /
``matched``), but a worker that starts, or any worker after a text change, would ask the
full-text index again for every query, one worker after another: for a broad word by relevance
that is the most expensive statement a search runs (bm25 or ts_rank of every match). Here the
first process to ask files the answer, the matches' document ids and their scores, with the
**text version** it was computed at (``cache.read_text_version``), which every process reads
alike and which moves only when some document's text changes; the others take it from Redis.

One entry per query (and order: ranked or not), overwritten when a newer text version is
filed, so Redis holds at most one answer per query however often the text changes; an entry
not written for ``TTL_SECONDS`` expires. An entry is only ever used under the text version it
was computed at, so it cannot be stale. Redis is an optimisation only: when it fails, searches
go on without it (one warning, then no attempt for ``BACKOFF_SECONDS``).
"""

from __future__ import annotations

import hashlib
import logging
import struct
import time
from typing import Any

import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ... import metrics
from .cache import Generation
from .text import Node

log = logging.getLogger(__name__)

TTL_SECONDS = 3600
BACKOFF_SECONDS = 30.0
TIMEOUT_SECONDS = 0.2
MAX_VALUE_BYTES = 8 * 2**20  # half a million matches: larger answers are not shared
# Of the keys and the values. Change it whenever the way a query's matches and scores are
# worked out changes (scoring.py: the phrase rules, the bm25 formula and weights), so that a
# rolling deploy never mixes two releases' answers.
FORMAT = 2
_HEADER = struct.Struct("<32sQB")  # text version digest; number of matches; 1 if scored


def version_digest(text_version: Generation) -> bytes:
    return hashlib.sha256(repr((FORMAT, text_version)).encode()).digest()


def encode(text_version: Generation, ids: np.ndarray, scores: np.ndarray | None) -> bytes:
    """The text version's digest, the ids as little-endian int64, then the scores as float64
    when ranked."""
    body = ids.astype("<i8").tobytes()
    if scores is not None:
        body += scores.astype("<f8").tobytes()
    return _HEADER.pack(version_digest(text_version), len(ids), scores is not None) + body


def decode(value: bytes) -> tuple[bytes, np.ndarray, np.ndarray | None]:
    """(text version digest, ids, scores or None); ValueError if ``value`` is not whole."""
    if not isinstance(value, bytes) or len(value) < _HEADER.size:
        raise ValueError("not an entry of shared matches")
    digest, n, ranked = _HEADER.unpack_from(value)
    expected = _HEADER.size + n * (16 if ranked else 8)
    if len(value) != expected:
        raise ValueError(f"shared matches of {len(value)} bytes, expected {expected}")
    ids = np.frombuffer(value, dtype="<i8", count=n, offset=_HEADER.size).astype(np.int64)
    if not ranked:
        return digest, ids, None
    scores = np.frombuffer(value, dtype="<f8", count=n, offset=_HEADER.size + 8 * n)
    return digest, ids, scores.astype(np.float64)


class SharedMatches:
    """Matches in Redis, one entry per (database dialect, plan, ranked or not)."""

    def __init__(self, client: Any, prefix: str, ttl: int = TTL_SECONDS):
        self.client = client
        self.prefix = prefix
        self.ttl = ttl
        self._retry_at = 0.0

    @classmethod
    def from_url(cls, url: str, prefix: str) -> SharedMatches:
        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=TIMEOUT_SECONDS,
            socket_timeout=TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), 0),  # a search never waits for more than one attempt
        )
        return cls(client, prefix)

    def key(self, dialect: str, plan: Node, ranked: bool) -> str:
        what = repr((FORMAT, dialect, ranked, plan)).encode()
        return f"{self.prefix}:search-matches:{hashlib.sha256(what).hexdigest()}"

    def get(
        self, key: str, text_version: Generation
    ) -> tuple[np.ndarray, np.ndarray | None] | None:
        """The matches filed under ``key`` at ``text_version``, or None (none there, another
        version's, unreadable, or Redis unavailable)."""
        answered, value = self._call(self.client.get, key)
        if not answered:
            return None
        found = None
        if value is not None:
            try:
                digest, ids, scores = decode(value)
            except ValueError as error:
                log.warning("shared search matches under %s unreadable: %s", key, error)
            else:
                if digest == version_digest(text_version):
                    found = ids, scores
        metrics.search_cache_lookup("shared", hit=found is not None)
        return found

    def put(
        self, key: str, text_version: Generation, ids: np.ndarray, scores: np.ndarray | None
    ) -> None:
        value = encode(text_version, ids, scores)
        if len(value) <= MAX_VALUE_BYTES:
            self._call(self.client.set, key, value, ex=self.ttl)

    def _call(self, method: Any, *args: Any, **kwargs: Any) -> tuple[bool, Any]:
        """(True, what Redis answered), or (False, None) when it could not be asked."""
        if time.monotonic() < self._retry_at:
            return False, None
        try:
            return True, method(*args, **kwargs)
        except redis.ResponseError as error:  # this key only (say, another program's value)
            log.warning("shared search matches: Redis refused %s: %s", args[0], error)
            return False, None
        except redis.RedisError as error:
            self._retry_at = time.monotonic() + BACKOFF_SECONDS
            log.warning(
                "shared search matches unavailable, searching without them for %.0f s: %s",
                BACKOFF_SECONDS,
                error,
            )
            return False, None
