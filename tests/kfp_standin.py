"""A local stand-in for the KFP v2beta1 REST API, so the real kfp.Client can talk to it.

It keeps experiments, pipelines, versions, runs and recurring runs in memory, records
every request, and enforces the backend's rules that fauna depends on. Each rule names
its source in kubeflow/pipelines (tag 2.15.0 unless said otherwise); docs/cluster.md
lists them. What it does not model: Argo itself (a run's outcome is scripted with
`run_outcomes`), SubjectAccessReview beyond a token -> namespaces table, and caching.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

API = "/apis/v2beta1"

# grpc-gateway's code -> HTTP status (grpc-gateway/v2 runtime/errors.go HTTPStatusFromCode).
INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED = 3, 5, 6, 7
ABORTED, UNAUTHENTICATED = 10, 16
HTTP_STATUS = {3: 400, 5: 404, 6: 409, 7: 403, 10: 409, 16: 401}


class ApiError(Exception):
    """A backend error: a google.rpc.Status body (common/util/error.go `GRPCStatus`)."""

    def __init__(self, code: int, internal: str, external: str | None = None):
        super().__init__(internal)
        self.status = HTTP_STATUS[code]
        self.body = {
            "code": code,
            "message": internal,  # the wrapped chain, e.g. "Failed to create a experiment: ..."
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.Status",
                    "code": code,
                    "message": external or internal,
                }
            ],
        }


class TransientError(Exception):
    """What a proxy or a restarting server answers: a status and a google.rpc.Status body."""

    def __init__(self, status: int, message: str = "upstream connect error or disconnect"):
        super().__init__(message)
        self.status = status
        code = 13 if status == 500 else 14  # INTERNAL, UNAVAILABLE
        self.body = {"code": code, "message": message, "details": []}


class UploadError(Exception):
    """The upload endpoints answer {error_message, error_details} (pipeline_upload_server.go)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.body = {"error_message": message, "error_details": message}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    raw: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class KfpStandIn:
    # What /healthz reports (main.go): the release's TAG_NAME and the MULTIUSER flag.
    tag_name: str = "2.15.0"
    multi_user: bool = False
    # Multi-user authentication: bearer token -> (user, namespaces it may use).
    tokens: dict[str, tuple[str, set[str]]] = field(default_factory=dict)
    # Each run ends in run_outcomes[attempt] (attempt 0 = first try, then one per retry).
    run_outcomes: list[str] = field(default_factory=lambda: ["SUCCEEDED"])
    # Answer healthz as the UI server does (the host is ml-pipeline-ui, not the API server).
    serves_ui: bool = False
    # Make the next recurring-run creation fail, to test that `schedule` is atomic.
    fail_next_recurring_create: bool = False
    # Faults of the retry call, one per POST :retry, then none: "exists" answers the
    # HTTP 500 "already exists" of a backend still updating the failed run's workflow
    # (kubeflow/pipelines#13507) and changes nothing; "lost" retries the run but the
    # answer is a proxy's 504 (the reply was lost).
    retry_faults: list[str] = field(default_factory=list)
    # Faults of the watch, one per GET of a run, then none: an HTTP status (the API
    # server restarting behind its Service: 503, a proxy: 502/504) or "drop" (the
    # connection closes without an answer).
    watch_faults: list[int | str] = field(default_factory=list)
    # A task whose pod stays Pending while the run is RUNNING: (display name, reason or
    # None). Up to 2.17 the backend reports the phase without the scheduler's message
    # (util/workflow.go `NodeStatuses`); a reason models a backend that passes it on.
    pending_task: tuple[str, str | None] | None = None
    requests: list[Request] = field(default_factory=list)
    experiments: dict[str, dict] = field(default_factory=dict)
    pipelines: dict[str, dict] = field(default_factory=dict)
    versions: dict[str, dict] = field(default_factory=dict)
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
                data = self.rfile.read(length) if length else b""
                ctype = self.headers.get("Content-Type", "")
                raw = data.decode("utf-8", "replace")
                body = _multipart(data, ctype) if "multipart" in ctype else _json(raw)
                query = parse_qs(parsed.query)
                path = unquote(parsed.path)
                headers = {k.lower(): v for k, v in self.headers.items()}
                standin.requests.append(Request(method, path, query, body, raw, headers))
                fault = standin._watch_fault(method, path)
                if fault == "drop":
                    self.close_connection = True
                    return
                try:
                    if fault is not None:
                        raise TransientError(int(fault))
                    status, payload = 200, standin.route(method, path, query, body, headers)
                except (ApiError, UploadError, TransientError) as exc:
                    status, payload = exc.status, exc.body
                out = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

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

    def _watch_fault(self, method: str, path: str) -> int | str | None:
        """The next scripted fault of a GET of an existing run, if any."""
        run_id = path.removeprefix(f"{API}/runs/")
        if method == "GET" and run_id in self.runs and self.watch_faults:
            return self.watch_faults.pop(0)
        return None

    # -- rules shared by every resource ---------------------------------------------

    def _namespace(self, namespace: str | None) -> str:
        """Single-user mode drops the namespace (resource_manager.go `ReplaceNamespace`)."""
        return (namespace or "") if self.multi_user else ""

    def _authorize(self, headers: dict, namespace: str, verb: str, resource: str) -> None:
        """Multi-user only: a bearer token whose user may use the namespace (`IsAuthorized`)."""
        if not self.multi_user:
            return
        token = headers.get("authorization", "").removeprefix("Bearer ")
        if token not in self.tokens:
            raise ApiError(
                UNAUTHENTICATED,
                "Failed to check authorization. User identity is empty in the request header",
            )
        user, allowed = self.tokens[token]
        if namespace not in allowed:
            raise ApiError(
                PERMISSION_DENIED,
                f"PermissionDenied: User '{user}' is not authorized with reason:  (request: "
                f"&ResourceAttributes{{Namespace:{namespace},Verb:{verb},"
                f"Group:pipelines.kubeflow.org,Resource:{resource}}}): Unauthorized access",
            )

    def _check_experiment_namespace(self, namespace: str, wrap: str) -> None:
        # experiment_server.go `canAccessExperiment`: checked before authorization.
        if self.multi_user and not namespace:
            text = "An experiment cannot have an empty namespace in multi-user mode"
            raise ApiError(INVALID_ARGUMENT, f"{wrap}: Invalid input error: {text}", text)

    # -- routing --------------------------------------------------------------------

    def route(self, method: str, path: str, query: dict, body: Any, headers: dict) -> Any:
        if path == f"{API}/healthz" and self.serves_ui:
            # frontend/server/handlers/healthz.ts: the UI server's own answer, with the
            # API server's fields renamed, next to the frontend's build metadata.
            return {
                "apiServerCommitHash": "unknown",
                "apiServerTagName": self.tag_name,
                "apiServerMultiUser": self.multi_user,
                "multi_user": self.multi_user,
                "apiServerReady": True,
                "buildDate": "",
                "frontendCommitHash": "",
                "frontendTagName": self.tag_name,
                "pipelineStore": "database",
            }
        if path == f"{API}/healthz":
            # main.go: no authentication; commit_sha, tag_name, multi_user, pipeline_store.
            return {
                "commit_sha": "unknown",
                "tag_name": self.tag_name,
                "multi_user": self.multi_user,
                "pipeline_store": "database",
            }
        handlers = [
            (f"{API}/experiments", self._experiments),
            (f"{API}/pipelines/upload_version", self._upload_version),
            (f"{API}/pipelines", self._pipelines),
            (f"{API}/runs", self._runs),
            (f"{API}/recurringruns", self._recurring_runs),
        ]
        for prefix, handler in handlers:
            if path == prefix or path.startswith(prefix + "/"):
                return handler(method, path[len(prefix) :].strip("/"), query, body, headers)
        raise ApiError(NOT_FOUND, f"stand-in does not serve {method} {path}")

    def _experiments(self, method: str, rest: str, query: dict, body: Any, headers: dict) -> Any:
        if method == "GET" and not rest:
            namespace = self._namespace(_first(query, "namespace"))
            self._check_experiment_namespace(namespace, "List experiments failed")
            self._authorize(headers, namespace, "list", "experiments")
            found = _listed(self.experiments, query, "display_name", namespace=namespace)
            return {"experiments": found, "total_size": len(found)}
        if method == "POST" and not rest:
            namespace = self._namespace(body.get("namespace"))
            wrap = "Failed to create a experiment: Failed to authorize the request"
            self._check_experiment_namespace(namespace, wrap)
            self._authorize(headers, namespace, "create", "experiments")
            for e in self.experiments.values():  # model/experiment.go idx_name_namespace
                if (e["namespace"], e["display_name"]) == (namespace, body["display_name"]):
                    raise ApiError(ALREADY_EXISTS, "Failed to create a experiment: exists")
            exp = {**body, "namespace": namespace, "experiment_id": str(uuid.uuid4())}
            self.experiments[exp["experiment_id"]] = exp
            return exp
        raise ApiError(NOT_FOUND, f"stand-in does not serve {method} experiments/{rest}")

    def _pipelines(self, method: str, rest: str, query: dict, body: Any, headers: dict) -> Any:
        if method == "GET" and not rest:
            namespace = self._namespace(_first(query, "namespace"))
            if namespace:
                self._authorize(headers, namespace, "list", "pipelines")
            found = _listed(self.pipelines, query, "name", namespace=namespace)
            return {"pipelines": found, "total_size": len(found)}
        if method == "POST" and not rest:
            # pipeline_server.go `CreatePipeline`: a pipeline without any version.
            namespace = self._namespace(body.get("namespace"))
            name = body.get("name") or body.get("display_name")
            if not name:
                raise ApiError(INVALID_ARGUMENT, "Invalid input error: name is required")
            if namespace:
                self._authorize(headers, namespace, "create", "pipelines")
            for p in self.pipelines.values():  # model/pipeline.go namespace_name
                if (p["namespace"], p["name"]) == (namespace, name):
                    text = f"Failed to create a new pipeline. The name {name} already exist."
                    raise ApiError(ALREADY_EXISTS, text)
            pipeline = {
                "pipeline_id": str(uuid.uuid4()),
                "name": name,
                "display_name": body.get("display_name") or name,
                "description": body.get("description", ""),
                "namespace": namespace,
            }
            self.pipelines[pipeline["pipeline_id"]] = pipeline
            return pipeline
        pipeline_id, _, tail = rest.partition("/")
        if method == "GET" and tail == "versions":
            self._pipeline(pipeline_id, headers, "list")
            found = _listed(self.versions, query, "name", pipeline_id=pipeline_id)
            found = [{k: v for k, v in f.items() if k != "spec"} for f in found]
            return {"pipeline_versions": found, "total_size": len(found)}
        raise ApiError(NOT_FOUND, f"stand-in does not serve {method} pipelines/{rest}")

    def _pipeline(self, pipeline_id: str, headers: dict, verb: str) -> dict:
        pipeline = self.pipelines.get(pipeline_id)
        if pipeline is None:
            raise ApiError(NOT_FOUND, f"Pipeline {pipeline_id} not found")
        if pipeline["namespace"]:
            self._authorize(headers, pipeline["namespace"], verb, "pipelines")
        return pipeline

    def _upload_version(self, method: str, rest: str, query: dict, body: Any, headers: dict) -> Any:
        # pipeline_upload_server.go `uploadPipelineVersion`.
        pipeline_id = _first(query, "pipelineid")
        upload = (body or {}).get("uploadfile")
        if method != "POST" or not pipeline_id or upload is None:
            raise UploadError(400, "Failed to create a pipeline version")
        filename, content = upload
        if not filename.endswith((".yaml", ".yml", ".json", ".zip", ".tar.gz", ".tgz")):
            raise UploadError(400, "Failed to create a pipeline version")
        try:
            self._pipeline(pipeline_id, headers, "create")
        except ApiError:
            raise UploadError(400, "Failed to create a pipeline version") from None
        name = _first(query, "name") or _first(query, "display_name") or filename
        for v in self.versions.values():  # model/pipeline_version.go idx_pipelineid_name
            if (v["pipeline_id"], v["name"]) == (pipeline_id, name):
                raise UploadError(409, "Failed to create a pipeline version")
        version = {
            "pipeline_id": pipeline_id,
            "pipeline_version_id": str(uuid.uuid4()),
            "name": name,
            "display_name": name,
            "description": _first(query, "description") or "",
            "spec": content,
        }
        self.versions[version["pipeline_version_id"]] = version
        return {k: v for k, v in version.items() if k != "spec"}

    def _runs(self, method: str, rest: str, query: dict, body: Any, headers: dict) -> Any:
        if method == "POST" and not rest:
            return self._create_run(body, headers)
        run_id, _, action = rest.partition(":")
        run = self.runs.get(run_id)
        if run is None:
            raise ApiError(NOT_FOUND, f"Run {run_id} not found")
        self._authorize(headers, run["namespace"], "get" if method == "GET" else action, "runs")
        if method == "GET" and not action:
            if run["state"] == "RUNNING" and self.pending_task:
                return {**run, "run_details": self._pending_details(run)}
            if run["state"] == "RUNNING":  # what Argo and the persistence agent would do
                attempt = min(run["attempt"], len(self.run_outcomes) - 1)
                run["state"] = self.run_outcomes[attempt]
            return run
        if method == "POST" and action == "retry":
            fault = self.retry_faults.pop(0) if self.retry_faults else None
            if fault == "exists" and run["state"] == "FAILED":
                # resource_manager.go `RetryRun`: the update failed, then the create.
                name = f"fauna-{run_id[:8]}"
                raise TransientError(
                    500,
                    f"Failed to retry a run: Failed to retry run {run_id} due to error "
                    f"updating and creating a workflow. Update error: Operation cannot be "
                    f'fulfilled on workflows.argoproj.io "{name}": the object has been '
                    f'modified: workflows.argoproj.io "{name}" already exists',
                )
            # workflow.go `GenerateRetryExecution`: only a Failed/Error workflow (FAILED).
            if run["state"] != "FAILED":
                text = "Workflow must be Failed/Error to retry"
                raise ApiError(
                    ABORTED,
                    f"Failed to retry a run: Failed to retry run {run_id}: BadRequestError: "
                    f"{text}: workflow cannot be retried",
                    text,
                )
            # resource_manager.go `RetryRun`: same run id, stored as running before it answers.
            run["state"], run["attempt"] = "RUNNING", run["attempt"] + 1
            if fault == "lost":
                raise TransientError(504, "upstream request timeout")
            return {}
        raise ApiError(NOT_FOUND, f"stand-in does not serve {method} runs/{rest}")

    def _pending_details(self, run: dict) -> dict:
        """run_details as api_converter.go `toApiPipelineTaskDetail` writes them."""
        name, reason = self.pending_task
        task = {
            "run_id": run["run_id"],
            "task_id": f"{run['run_id']}-{name}",
            "display_name": name,
            "state": "PENDING",
            "child_tasks": [{"pod_name": f"fauna-{run['run_id'][:8]}-system-container-impl"}],
        }
        if reason:
            task["error"] = {"code": 9, "message": reason}  # 9: FAILED_PRECONDITION
        return {"task_details": [{"display_name": "root", "state": "RUNNING"}, task]}

    def _create_run(self, body: dict, headers: dict) -> dict:
        # run_server.go `createRun`.
        if not body.get("display_name"):
            text = "The run name is empty. Please specify a valid name"
            raise ApiError(INVALID_ARGUMENT, f"Invalid input error: {text}", text)
        experiment = self.experiments.get(body.get("experiment_id") or "")
        if self.multi_user and experiment is None:
            text = "Experiment id can not be empty in multi-user mode"
            raise ApiError(INVALID_ARGUMENT, f"Failed to create a new run: {text}", text)
        namespace = experiment["namespace"] if experiment else ""
        self._authorize(headers, namespace, "create", "runs")
        self._check_source(body)
        run = {
            **body,
            "namespace": namespace,
            "run_id": str(uuid.uuid4()),
            "state": "RUNNING",
            "attempt": 0,
        }
        self.runs[run["run_id"]] = run
        return run

    def _check_source(self, body: dict) -> None:
        """A run or recurring run names an existing version of its pipeline, or carries a spec."""
        reference = body.get("pipeline_version_reference")
        if not reference:
            if not body.get("pipeline_spec"):
                raise ApiError(INVALID_ARGUMENT, "Invalid input error: no pipeline spec")
            return
        version = self.versions.get(reference.get("pipeline_version_id") or "")
        if version is None or version["pipeline_id"] != reference.get("pipeline_id"):
            raise ApiError(NOT_FOUND, f"PipelineVersion {reference} not found")

    def _recurring_runs(self, method: str, rest: str, query: dict, body: Any, headers: dict):
        if method == "POST" and not rest:
            # job_server.go: the namespace comes from the experiment; none is an error.
            experiment = self.experiments.get(body.get("experiment_id") or "")
            namespace = experiment["namespace"] if experiment else ""
            if self.multi_user and not namespace:
                text = "Recurring run cannot have an empty namespace in multi-user mode"
                raise ApiError(INVALID_ARGUMENT, f"Invalid input error: {text}", text)
            self._authorize(headers, namespace, "create", "jobs")
            self._check_source(body)
            if self.fail_next_recurring_create:
                self.fail_next_recurring_create = False
                raise ApiError(INVALID_ARGUMENT, "Failed to create a recurring run: injected")
            rec = {**body, "recurring_run_id": str(uuid.uuid4()), "status": "ENABLED"}
            self.recurring[rec["recurring_run_id"]] = rec
            return rec
        if method == "GET" and not rest:
            exp = _first(query, "experiment_id")
            found = [r for r in self.recurring.values() if exp in (None, r.get("experiment_id"))]
            # recurring_run.proto names this field recurringRuns (camel case) on the wire.
            return {"recurringRuns": found, "total_size": len(found)}
        if method == "DELETE" and rest:
            if self.recurring.pop(rest, None) is None:
                raise ApiError(NOT_FOUND, f"Recurring run {rest} not found")
            return {}
        raise ApiError(NOT_FOUND, f"stand-in does not serve {method} recurringruns/{rest}")


def _first(query: dict, key: str) -> str | None:
    return (query.get(key) or [None])[0]


def _listed(items: dict[str, dict], query: dict, key: str, **match: str) -> list[dict]:
    """The items matching `match` and the request's name filter on `key`."""
    name = _filter_value(query)
    return [
        item
        for item in items.values()
        if all(item[k] == v for k, v in match.items()) and name in (None, item[key])
    ]


def _filter_value(query: dict) -> str | None:
    """The value of an EQUALS predicate on name/display_name (the filter kfp.Client sends)."""
    if "filter" not in query:
        return None
    for p in json.loads(query["filter"][0]).get("predicates", []):
        if p.get("key") in ("name", "display_name"):
            return p.get("string_value") or p.get("stringValue")
    return None


def _json(raw: str) -> Any:
    return json.loads(raw) if raw.strip() else None


def _multipart(data: bytes, content_type: str) -> dict[str, tuple[str, str]]:
    """Form parts by name -> (filename, text): what an upload endpoint reads."""
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + data)
    parts = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        parts[name] = (part.get_filename() or "", payload.decode("utf-8", "replace"))
    return parts
