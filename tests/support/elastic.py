"""A recording Elasticsearch node for `make test`: every request the backend builds, and a tiny cluster.

No Elasticsearch server can be had on the build machines, so the backend's
client is given :class:`RecordingNode` as its ``node_class``: each request is
recorded (method, path, the API key it carried, the JSON body) and answered by
:class:`FakeCluster`, which keeps documents in memory, applies ``term``/``terms``
filters, and refuses a ministry key on another ministry's index the way the
real security layer does. It ranks crudely (shared characters, cosine); the
real ranking is proven by the live tier (`make test-es`).
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from elastic_transport import ApiResponseMeta, BaseNode, HttpHeaders
from elastic_transport._node._base import NodeApiResponse  # the return type BaseNode declares

ADMIN_KEY = "admin-test-key"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    api_key: str  # the encoded key of the Authorization header ('' for none)
    body: Any  # parsed JSON, a list for NDJSON bodies, None when empty


@dataclass
class FakeCluster:
    requests: list[Recorded] = field(default_factory=list)
    templates: dict[str, Any] = field(default_factory=dict)
    indices: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    aliases: dict[str, set[str]] = field(default_factory=dict)  # alias -> indices
    keys: dict[str, list[str]] = field(default_factory=dict)  # encoded key -> allowed index patterns
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def reset(self) -> None:
        self.requests.clear()
        self.templates.clear()
        self.indices.clear()
        self.aliases.clear()
        self.keys.clear()

    # --- helpers ------------------------------------------------------------------

    def resolve(self, name: str) -> list[str]:
        if name in self.aliases:
            return sorted(self.aliases[name])
        if "*" in name:
            pattern = re.compile("^" + re.escape(name).replace(r"\*", ".*") + "$")
            return sorted(i for i in self.indices if pattern.match(i))
        return [name] if name in self.indices else []

    def allowed(self, api_key: str, name: str) -> bool:
        if api_key == ADMIN_KEY:
            return True
        patterns = self.keys.get(api_key, [])
        return any(re.match("^" + re.escape(p).replace(r"\*", ".*") + "$", name) for p in patterns)

    @staticmethod
    def matches(doc: dict[str, Any], filters: list[dict[str, Any]]) -> bool:
        for clause in filters:
            if "term" in clause:
                ((name, value),) = clause["term"].items()
                if doc.get(name) != value:
                    return False
            elif "terms" in clause:
                ((name, values),) = clause["terms"].items()
                if doc.get(name) not in values:
                    return False
            elif "bool" in clause:
                if not FakeCluster.matches(doc, clause["bool"].get("filter", [])):
                    return False
            else:
                raise AssertionError(f"unsupported filter clause {clause}")
        return True

    def search_one(self, index: str, body: dict[str, Any]) -> dict[str, Any]:
        docs = [d for i in self.resolve(index) for d in self.indices[i].values()]
        if "knn" in body:
            knn = body["knn"]
            docs = [d for d in docs if "embedding" in d and self.matches(d, [knn["filter"]])]
            q = knn["query_vector"]

            def cosine(d: dict[str, Any]) -> float:
                v = d["embedding"]
                dot = sum(a * b for a, b in zip(q, v, strict=True))
                return dot / (math.sqrt(sum(a * a for a in q)) * math.sqrt(sum(b * b for b in v)) or 1)

            ranked = sorted(docs, key=cosine, reverse=True)[: knn["k"]]

            def score(d: dict[str, Any]) -> float:
                return (1.0 + cosine(d)) / 2  # Elasticsearch's _score for cosine similarity

        else:
            query = body["query"]["bool"]
            docs = [d for d in docs if self.matches(d, query["filter"])]
            words = set(query["must"][0]["multi_match"]["query"]) - set(" 　、。?？はのをにがでと")

            def overlap(d: dict[str, Any]) -> int:
                return len(words & set(d["text"] + d.get("heading", "")))

            ranked = sorted((d for d in docs if overlap(d)), key=overlap, reverse=True)

            def score(d: dict[str, Any]) -> float:
                return float(overlap(d))

        hits = [
            {
                "_id": str(d["chunk_id"]),
                "_score": score(d),
                "_source": {k: v for k, v in d.items() if k != "embedding"},
            }
            for d in ranked[: body["size"]]
        ]
        return {"hits": {"hits": hits}, "status": 200}

    # --- the API ------------------------------------------------------------------

    def handle(self, request: Recorded) -> tuple[int, Any]:  # a router
        m, parts, key, body = (
            request.method,
            [p for p in request.path.split("/") if p],
            request.api_key,
            request.body,
        )
        if parts == ["_cluster", "health"]:
            return 200, {"status": "green"}
        if parts[:1] == ["_index_template"]:
            self.templates[parts[1]] = body
            return 200, {"acknowledged": True}
        if parts == ["_security", "api_key"] and m in ("POST", "PUT"):
            n = next(self._ids)
            encoded = base64.b64encode(f"key{n}:secret{n}".encode()).decode()
            names = [
                name
                for role in body["role_descriptors"].values()
                for grant in role["indices"]
                for name in grant["names"]
            ]
            self.keys[encoded] = names
            return 200, {"id": f"key{n}", "name": body["name"], "api_key": f"secret{n}", "encoded": encoded}
        if parts == ["_security", "api_key"] and m == "DELETE":
            return 200, {"invalidated_api_keys": body["ids"]}
        if parts[:1] == ["_alias"] and m == "HEAD":
            return (200 if parts[1] in self.aliases else 404), None
        if parts[:1] == ["_alias"] and m == "GET":
            if parts[1] not in self.aliases:
                return 404, {"error": "alias missing", "status": 404}
            return 200, {i: {"aliases": {parts[1]: {}}} for i in self.aliases[parts[1]]}
        if parts == ["_aliases"]:
            for action in body["actions"]:
                ((op, spec),) = action.items()
                target = self.aliases.setdefault(spec["alias"], set())
                (target.add if op == "add" else target.discard)(spec["index"])
            return 200, {"acknowledged": True}
        if parts == ["_bulk"]:
            items = []
            for header, source in zip(body[::2], body[1::2], strict=True):
                ((op, meta),) = header.items()
                names = self.resolve(meta["_index"])
                if not self.allowed(key, meta["_index"]) or len(names) != 1:
                    items.append(
                        {op: {"_id": meta["_id"], "status": 403, "error": {"type": "security_exception"}}}
                    )
                    continue
                self.indices[names[0]][meta["_id"]] = source
                items.append({op: {"_id": meta["_id"], "status": 201, "result": "created"}})
            errors = any(i[next(iter(i))]["status"] >= 300 for i in items)
            return 200, {"took": 1, "errors": errors, "items": items}
        if parts == ["_msearch"]:
            responses = []
            for header, search in zip(body[::2], body[1::2], strict=True):
                if not self.allowed(key, header["index"]):
                    responses.append({"error": {"type": "security_exception"}, "status": 403})
                elif not self.resolve(header["index"]):
                    responses.append({"error": {"type": "index_not_found_exception"}, "status": 404})
                else:
                    responses.append(self.search_one(header["index"], search))
            return 200, {"took": 1, "responses": responses}
        if parts == ["_reindex"]:
            source, dest = self.resolve(body["source"]["index"]), body["dest"]["index"]
            for name in source:
                self.indices[dest].update(self.indices[name])
            return 200, {"total": sum(len(self.indices[n]) for n in source)}
        if len(parts) == 2 and parts[1] == "_delete_by_query":
            if not self.allowed(key, parts[0]):
                return 403, {"error": {"type": "security_exception"}, "status": 403}
            names = self.resolve(parts[0])
            if not names:
                return 404, {"error": {"type": "index_not_found_exception"}, "status": 404}
            deleted = 0
            for name in names:
                for doc_id, doc in list(self.indices[name].items()):
                    if self.matches(doc, body["query"]["bool"]["filter"]):
                        del self.indices[name][doc_id]
                        deleted += 1
            return 200, {"deleted": deleted}
        if len(parts) == 1 and m == "PUT":
            if parts[0] in self.indices:
                return 400, {"error": {"type": "resource_already_exists_exception"}, "status": 400}
            self.indices[parts[0]] = {}
            for alias in (body or {}).get("aliases", {}):
                self.aliases.setdefault(alias, set()).add(parts[0])
            return 200, {"acknowledged": True, "index": parts[0]}
        if len(parts) == 1 and m == "DELETE":
            for name in self.resolve(parts[0]):
                del self.indices[name]
                for members in self.aliases.values():
                    members.discard(name)
            return 200, {"acknowledged": True}
        raise AssertionError(f"unexpected request {m} {request.path}")


cluster = FakeCluster()


class RecordingNode(BaseNode):
    """An elastic_transport node that records each request and lets :data:`cluster` answer it."""

    def perform_request(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        headers: HttpHeaders | None = None,
        request_timeout: Any = None,
    ) -> NodeApiResponse:
        url = urlsplit(target)
        auth = (headers or {}).get("authorization", "")
        text = (body or b"").decode()
        if not text:
            parsed: Any = None
        elif url.path.endswith(("_bulk", "_msearch")):
            parsed = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            parsed = json.loads(text)
        recorded = Recorded(
            method=method,
            path=unquote(url.path),
            query=parse_qs(url.query),
            api_key=auth.removeprefix("ApiKey ").strip(),
            body=parsed,
        )
        cluster.requests.append(recorded)
        status, payload = cluster.handle(recorded)
        meta = ApiResponseMeta(
            status=status,
            http_version="1.1",
            headers=HttpHeaders({"content-type": "application/json", "x-elastic-product": "Elasticsearch"}),
            duration=0.0,
            node=self.config,
        )
        return NodeApiResponse(meta, b"" if payload is None else json.dumps(payload).encode())
