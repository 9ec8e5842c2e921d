"""An Elasticsearch stand-in at the HTTP boundary: a custom ``node_class`` for the official
client that records every request and answers from a small in-memory model of the REST API
(indices, aliases, bulk, search with canned bodies). Responses carry
``X-elastic-product: Elasticsearch`` as a real server's do, or the client refuses them."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from elastic_transport import ApiResponseMeta, BaseNode, HttpHeaders, NodeConfig
from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport._node._base import NodeApiResponse
from elasticsearch import Elasticsearch


@dataclass
class Request:
    method: str
    path: str
    query: str
    body: bytes | None

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def ndjson(self) -> list[Any]:
        return [json.loads(line) for line in (self.body or b"").decode().splitlines() if line]


@dataclass
class FakeServer:
    requests: list[Request] = field(default_factory=list)
    indices: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {"docs", "body"}
    aliases: dict[str, set[str]] = field(default_factory=dict)  # alias -> indices
    down: bool = False
    search_response: dict[str, Any] | None = None
    bulk_status: Callable[[str, dict[str, Any]], int] = lambda _op, _meta: 201

    def of(self, method: str, pattern: str) -> list[Request]:
        return [
            r
            for r in self.requests
            if re.fullmatch(method, r.method) and re.fullmatch(pattern, r.path)
        ]

    def handle(self, method: str, path: str, query: str, body: bytes | None) -> tuple[int, Any]:
        self.requests.append(Request(method, path, query, body))
        if self.down:
            raise TransportConnectionError("Connection refused (fake server is down)")
        parts = [p for p in path.split("/") if p]
        if method == "HEAD" and parts[:1] == ["_alias"]:
            return (200, None) if self.aliases.get(parts[1]) else (404, None)
        if method == "GET" and parts[:1] == ["_alias"]:
            found = self.aliases.get(parts[1])
            if not found:
                return 404, {"error": f"alias [{parts[1]}] missing", "status": 404}
            return 200, {name: {"aliases": {parts[1]: {}}} for name in sorted(found)}
        if method == "POST" and parts == ["_aliases"]:
            for action in json.loads(body)["actions"]:
                ((kind, spec),) = action.items()
                members = self.aliases.setdefault(spec["alias"], set())
                (members.add if kind == "add" else members.discard)(spec["index"])
            return 200, {"acknowledged": True}
        if method in ("POST", "PUT") and parts[-1:] == ["_bulk"]:
            return 200, self._bulk(body, parts[0] if len(parts) == 2 else None)
        if method == "PUT" and len(parts) == 1:
            self.indices[parts[0]] = {"docs": {}, "body": json.loads(body)}
            return 200, {"acknowledged": True, "shards_acknowledged": True, "index": parts[0]}
        if method == "GET" and len(parts) == 1:
            pattern = re.compile(re.escape(parts[0]).replace(r"\*", ".*"))
            return 200, {n: {} for n in self.indices if pattern.fullmatch(n)}
        if method == "DELETE" and len(parts) == 1:
            self.indices.pop(parts[0], None)
            return 200, {"acknowledged": True}
        if method == "POST" and parts[-1:] == ["_refresh"]:
            return 200, {"_shards": {"total": 1, "successful": 1, "failed": 0}}
        if method == "POST" and parts[-1:] == ["_search"]:
            return 200, self.search_response
        return 400, {"error": f"fake server: no route for {method} {path}", "status": 400}

    def _resolve(self, name: str) -> str:
        members = self.aliases.get(name)
        return sorted(members)[0] if members else name

    def _bulk(self, body: bytes, default_index: str | None) -> dict[str, Any]:
        lines = [json.loads(line) for line in body.decode().splitlines() if line]
        items, i = [], 0
        while i < len(lines):
            ((op, meta),) = lines[i].items()
            source = lines[i + 1] if op in ("index", "create") else None
            i += 2 if source is not None else 1
            index = self._resolve(meta.get("_index", default_index))
            docs = self.indices.setdefault(index, {"docs": {}, "body": None})["docs"]
            status = self.bulk_status(op, meta)
            current = docs.get(meta["_id"])
            if (
                status < 300
                and meta.get("version_type") == "external"
                and current is not None
                and current["version"] >= meta["version"]
            ):
                status = 409
            if status < 300:
                if op == "delete":
                    status = 200 if docs.pop(meta["_id"], None) else 404
                else:
                    docs[meta["_id"]] = {"version": meta.get("version"), "source": source}
            item = {"_index": index, "_id": meta["_id"], "status": status}
            if status >= 300 and status != 404:
                item["error"] = {
                    "type": "version_conflict_engine_exception" if status == 409 else "fake_error"
                }
            items.append({op: item})
        return {
            "took": 1,
            "errors": any("error" in next(iter(x.values())) for x in items),
            "items": items,
        }


class RecordingNode(BaseNode):
    """The node class handed to ``Elasticsearch(node_class=...)``; talks to ``server``."""

    server: FakeServer = FakeServer()

    def __init__(self, config: NodeConfig):
        super().__init__(config)

    def perform_request(self, method, target, body=None, headers=None, request_timeout=None):
        path, _, query = target.partition("?")
        status, payload = self.server.handle(method, path, query, body)
        data = b"" if payload is None else json.dumps(payload).encode()
        meta = ApiResponseMeta(
            status=status,
            http_version="1.1",
            headers=HttpHeaders(
                {
                    "X-elastic-product": "Elasticsearch",
                    "content-type": "application/vnd.elasticsearch+json;compatible-with=9",
                }
            ),
            duration=0.001,
            node=self.config,
        )
        return NodeApiResponse(meta, data)


def fake_client(server: FakeServer) -> Elasticsearch:
    RecordingNode.server = server
    return Elasticsearch("http://es.test:9200", node_class=RecordingNode, max_retries=0)
