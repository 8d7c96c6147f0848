"""A stand-in Kubeflow Model Registry on 127.0.0.1 that the real `model-registry` client drives.

It implements the part of the REST API the client uses for registering (kubeflow/model-registry
api/openapi/model-registry.yaml): registered_models, model_versions, model_artifacts, the
find-by-params paths (`registered_model`, `model_version`, `model_artifact`), PATCH updates,
the versions of a model and the artifacts of a version. Paths are served under the prefix
the pinned client sends (`/api/model_registry/v1`, from `mr_openapi`) and under the
spec's `v1alpha3`.

Every request body is checked against the client's generated OpenAPI models (`mr_openapi`)
the way the server's Go decoder does (kubeflow/model-registry test/robot/Regression.robot):
an unknown field is 400 `json: unknown field "x"`, a missing or wrong-typed one 422; both
with the `Error` body {code, message}. Not found is 404, a duplicate name 409. Every
response body is checked against the models too, so the stand-in cannot drift from what
the client parses. `refuse_with(503)` makes every request fail (a registry that refuses).
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from mr_openapi import models as m

PREFIXES = ("/api/model_registry/v1alpha3", "/api/model_registry/v1")
KINDS = {  # collection -> (create model, update model, full model, list model)
    "registered_models": (
        m.RegisteredModelCreate,
        m.RegisteredModelUpdate,
        m.RegisteredModel,
        m.RegisteredModelList,
    ),
    "model_versions": (
        m.ModelVersionCreate,
        m.ModelVersionUpdate,
        m.ModelVersion,
        m.ModelVersionList,
    ),
    "model_artifacts": (
        m.ModelArtifactCreate,
        m.ModelArtifactUpdate,
        m.ModelArtifact,
        m.ModelArtifactList,
    ),
}
FIND = {"registered_model": "registered_models", "model_version": "model_versions"}
FIND["model_artifact"] = "model_artifacts"
PARENT = {"model_versions": "registeredModelId", "model_artifacts": "_versionId"}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def checked(model: type, body: Any) -> dict[str, Any]:
    """The body as `model` accepts it: unknown fields 400, invalid ones 422 (the server's)."""
    if not isinstance(body, dict):
        raise ApiError(400, "Bad Request", "json: cannot unmarshal into an object")
    known = {f.alias or name for name, f in model.model_fields.items()}
    for key in body:
        if key not in known:
            raise ApiError(400, "Bad Request", f'json: unknown field "{key}"')
    try:
        model.from_dict(body)
    except Exception as exc:  # pydantic's ValidationError: a missing or wrong-typed field
        raise ApiError(422, "Bad Request", str(exc).splitlines()[0]) from None
    return body


class Store:
    """The registry's records, by collection and id (ids are int64 strings, as the server's)."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in KINDS}
        self.ids = itertools.count(1)
        self.lock = threading.Lock()

    def create(self, kind: str, body: dict[str, Any], **extra: Any) -> dict[str, Any]:
        items = self.items[kind]
        parent_key = PARENT.get(kind)
        parent = extra.get(parent_key) or body.get(parent_key)
        if kind == "model_versions" and parent not in self.items["registered_models"]:
            raise ApiError(404, "Not Found", f"registered model {parent} not found")
        same = [
            r for r in items.values() if r["name"] == body["name"] and r.get(parent_key) == parent
        ]
        if body.get("name") is not None and same:
            raise ApiError(409, "Conflict", f"{kind[:-1]} with name {body['name']} already exists")
        now = str(int(time.time() * 1000))
        record = {"state": "LIVE", "customProperties": {}, **body, **extra}
        if kind == "model_artifacts":
            record.setdefault("artifactType", "model-artifact")
            record["state"] = body.get("state", "UNKNOWN")
        record.update(id=str(next(self.ids)), createTimeSinceEpoch=now)
        record["lastUpdateTimeSinceEpoch"] = now
        items[record["id"]] = record
        return record

    def get(self, kind: str, ident: str) -> dict[str, Any]:
        if ident not in self.items[kind]:
            raise ApiError(404, "Not Found", f"{kind[:-1]} with id {ident} not found")
        return self.items[kind][ident]

    def patch(self, kind: str, ident: str, body: dict[str, Any]) -> dict[str, Any]:
        record = self.get(kind, ident)
        record.update(body)  # the fields given replace the stored ones (customProperties too)
        record["lastUpdateTimeSinceEpoch"] = str(int(time.time() * 1000))
        return record

    def find(self, kind: str, query: dict[str, str]) -> dict[str, Any]:
        parent = query.get("parentResourceId")
        for record in self.items[kind].values():
            if "name" in query and record.get("name") != query["name"]:
                continue
            if "externalId" in query and record.get("externalId") != query["externalId"]:
                continue
            if parent is not None and record.get(PARENT[kind]) != parent:
                continue
            return record
        raise ApiError(404, "Not Found", f"no {kind[:-1]} found for {query}")


def page(records: list[dict[str, Any]], query: dict[str, str], default: int) -> dict[str, Any]:
    """One page of a list, with the server's nextPageToken (an offset here; "" after the
    last page, and a request without a token starts over: the client's Pager relies on it)."""
    size = int(query.get("pageSize") or default)
    start = int(query.get("nextPageToken") or 0)
    items = records[start : start + size]
    more = start + size < len(records)
    return {
        "items": items,
        "nextPageToken": str(start + size) if more else "",
        "pageSize": size,
        "size": len(items),
    }


class StandinRegistry:
    """The server: `url` for the client, `requests` as received, `refuse_with(status)`."""

    def __init__(self, page_size: int = 100) -> None:
        self.page_size = page_size  # the server's default page size
        self.store = Store()
        self.requests: list[tuple[str, str, Any]] = []
        self.statuses: list[int] = []
        self.refusing: int | None = None
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> StandinRegistry:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def refuse_with(self, status: int | None) -> None:
        self.refusing = status

    def versions(self) -> dict[str, dict[str, Any]]:
        """Model versions by name, each with its plain custom properties and its artifacts."""
        out = {}
        for mv in self.store.items["model_versions"].values():
            artifacts = [
                a
                for a in self.store.items["model_artifacts"].values()
                if a["_versionId"] == mv["id"]
            ]
            props = {k: _plain(v) for k, v in mv.get("customProperties", {}).items()}
            out[mv["name"]] = {**mv, "props": props, "artifacts": artifacts}
        return out

    # ----------------------------------------------------------------- routing

    def route(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        if self.refusing:
            raise ApiError(self.refusing, "Service Unavailable", "the registry is unavailable")
        for prefix in PREFIXES:
            if path.startswith(prefix + "/"):
                path = path[len(prefix) :]
                break
        else:
            raise ApiError(404, "Not Found", f"no route {path}")
        with self.store.lock:
            return self._route(method, path.strip("/").split("/"), query, body)

    def _route(self, method: str, parts: list[str], query: dict, body: Any) -> tuple[int, Any]:
        store, kind = self.store, parts[0]
        if kind in FIND and len(parts) == 1 and method == "GET":
            return 200, self._out(FIND[kind], store.find(FIND[kind], query))
        if kind not in KINDS:
            raise ApiError(404, "Not Found", f"no route /{'/'.join(parts)}")
        create, update, _, listed = KINDS[kind]
        if len(parts) == 1 and method == "POST":
            return 201, self._out(kind, store.create(kind, checked(create, body)))
        if len(parts) == 1 and method == "GET":
            return 200, self._list(kind, list(store.items[kind].values()), query, listed)
        ident = parts[1]
        if not re.fullmatch(r"[1-9][0-9]{0,8}", ident):  # the spec's id pattern
            raise ApiError(400, "Bad Request", f"invalid id {ident!r}")
        if len(parts) == 2 and method == "GET":
            return 200, self._out(kind, store.get(kind, ident))
        if len(parts) == 2 and method == "PATCH":
            return 200, self._out(kind, store.patch(kind, ident, checked(update, body)))
        if parts[2:] == ["versions"] and kind == "registered_models":
            store.get(kind, ident)
            mine = [
                v for v in store.items["model_versions"].values() if v["registeredModelId"] == ident
            ]
            if method == "GET":
                return 200, self._list("model_versions", mine, query, m.ModelVersionList)
        if parts[2:] == ["artifacts"] and kind == "model_versions":
            return self._version_artifacts(method, ident, query, body)
        raise ApiError(405, "Method Not Allowed", f"{method} /{'/'.join(parts)}")

    def _version_artifacts(self, method: str, ident: str, query: dict, body: Any):
        store = self.store
        store.get("model_versions", ident)
        if method == "POST":  # upsert: an Artifact (oneOf); the client sends a ModelArtifact
            if not isinstance(body, dict) or body.get("artifactType") != "model-artifact":
                raise ApiError(422, "Bad Request", "only model-artifact is supported here")
            checked(m.ModelArtifact, body)
            if body.get("id"):
                record = store.patch("model_artifacts", body["id"], body)
            else:
                record = store.create("model_artifacts", body, _versionId=ident)
            return 201, self._out("model_artifacts", record, m.Artifact)
        mine = [a for a in store.items["model_artifacts"].values() if a["_versionId"] == ident]
        return 200, self._list("model_artifacts", mine, query, m.ArtifactList)

    def _out(self, kind: str, record: dict[str, Any], model: type | None = None) -> dict:
        body = {k: v for k, v in record.items() if not k.startswith("_")}
        (model or KINDS[kind][2]).from_dict(body)  # what the client will parse
        return body

    def _list(self, kind: str, records: list, query: dict, model: type) -> dict:
        body = page([self._out(kind, r) for r in records], query, self.page_size)
        model.from_dict(body)
        return body


def _plain(value: dict[str, Any]) -> Any:
    """A MetadataValue's Python value ({"metadataType": ..., "string_value": ...})."""
    for key in ("string_value", "int_value", "double_value", "bool_value"):
        if key in value:
            return int(value[key]) if key == "int_value" else value[key]
    return value


def _handler(registry: StandinRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _serve(self) -> None:
            split = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(split.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            registry.requests.append((self.command, split.path, body))
            try:
                status, answer = registry.route(self.command, split.path, query, body)
            except ApiError as exc:
                status, answer = exc.status, {"code": exc.code, "message": exc.message}
                m.Error.from_dict(answer)
            registry.statuses.append(status)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = _serve

    return Handler


if __name__ == "__main__":  # by hand: MODEL_REGISTRY_URL=<printed URL> make local-run
    import sys

    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
    standin = StandinRegistry()
    standin.server.server_close()
    standin.server = ThreadingHTTPServer(("127.0.0.1", port), _handler(standin))
    print(f"stand-in Model Registry at http://127.0.0.1:{port} (Ctrl-C: list and stop)")
    try:
        standin.server.serve_forever()
    except KeyboardInterrupt:
        for name, version in standin.versions().items():
            print(name, "champion" if version["props"].get("champion") == "true" else "")
