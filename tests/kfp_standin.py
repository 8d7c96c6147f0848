"""A small local stand-in for the KFP v2beta1 REST API, so the real kfp.Client can talk to it.

It keeps experiments, runs and recurring runs in memory and records every request,
so tests assert on what the client actually sent over HTTP.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

API = "/apis/v2beta1"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    raw: str


@dataclass
class KfpStandIn:
    run_final_state: str = "SUCCEEDED"
    requests: list[Request] = field(default_factory=list)
    experiments: dict[str, dict] = field(default_factory=dict)
    runs: dict[str, dict] = field(default_factory=dict)
    recurring: dict[str, dict] = field(default_factory=dict)
    url: str = ""

    def start(self) -> KfpStandIn:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _handle(self, method: str) -> None:
                parsed = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode() if length else ""
                body = json.loads(raw) if raw else None
                standin.requests.append(
                    Request(method, parsed.path, parse_qs(parsed.query), body, raw)
                )
                status, payload = standin.route(method, parsed.path, parse_qs(parsed.query), body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                self._handle("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._handle("POST")

            def do_DELETE(self) -> None:  # noqa: N802
                self._handle("DELETE")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def route(self, method: str, path: str, query: dict, body: Any) -> tuple[int, Any]:
        if path == f"{API}/healthz":
            return 200, {"multi_user": False}
        if path == f"{API}/experiments" and method == "GET":
            name = None
            if "filter" in query:
                predicates = json.loads(query["filter"][0]).get("predicates", [])
                name = next(
                    (p.get("string_value") or p.get("stringValue") for p in predicates), None
                )
            found = [e for e in self.experiments.values() if name in (None, e["display_name"])]
            return 200, {"experiments": found, "total_size": len(found)}
        if path == f"{API}/experiments" and method == "POST":
            exp = {**body, "experiment_id": str(uuid.uuid4())}
            self.experiments[exp["experiment_id"]] = exp
            return 200, exp
        if path == f"{API}/runs" and method == "POST":
            run = {**body, "run_id": str(uuid.uuid4()), "state": "RUNNING"}
            self.runs[run["run_id"]] = run
            return 200, run
        if path.startswith(f"{API}/runs/") and method == "GET":
            run = self.runs.get(path.rsplit("/", 1)[1])
            if run is None:
                return 404, {"error": "not found"}
            run["state"] = self.run_final_state
            return 200, run
        if path == f"{API}/recurringruns" and method == "POST":
            rec = {**body, "recurring_run_id": str(uuid.uuid4()), "status": "ENABLED"}
            self.recurring[rec["recurring_run_id"]] = rec
            return 200, rec
        if path == f"{API}/recurringruns" and method == "GET":
            exp = (query.get("experiment_id") or [None])[0]
            found = [r for r in self.recurring.values() if exp in (None, r.get("experiment_id"))]
            return 200, {"recurringRuns": found, "total_size": len(found)}
        if path.startswith(f"{API}/recurringruns/") and method == "DELETE":
            self.recurring.pop(path.rsplit("/", 1)[1], None)
            return 200, {}
        return 404, {"error": f"stand-in does not serve {method} {path}"}
