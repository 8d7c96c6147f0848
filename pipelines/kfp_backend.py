"""The connection to a Kubeflow Pipelines backend: where, who, which namespace, which version.

Every rule here comes from the backend's own source (kubeflow/pipelines, tag 2.15.0 unless
a newer one is named) and is mirrored by tests/kfp_standin.py:

- `GET /apis/v2beta1/healthz` answers `commit_sha`, `tag_name`, `multi_user` and
  `pipeline_store` without authentication (backend/src/apiserver/main.go). Through the
  UI (ml-pipeline-ui, which proxies the rest of /apis) the UI server answers it itself,
  as `apiServerTagName`, `apiServerMultiUser`, `multi_user` and `apiServerReady`
  (frontend/server/handlers/healthz.ts). The generated client's model drops the tag, so
  the endpoint is read here directly.
- Official 2.14 and 2.15 images report `tag_name: "unknown"`: their image build passed no
  `TAG_NAME` (.github/workflows/build-and-push.yml; fixed for 2.16 by #12795).
- In multi-user mode every experiment, run and recurring run needs a namespace
  (backend/src/apiserver/server/experiment_server.go `canAccessExperiment`,
  run_server.go, job_server.go); single-user mode ignores it (resource_manager.go
  `ReplaceNamespace`).
- Errors come back as a google.rpc.Status JSON, `{"code", "message", "details"}`
  (grpc-gateway with `common.CustomMarshaler`), or from the upload endpoints as
  `{"error_message", "error_details"}` (pipeline_upload_server.go `writeErrorToResponse`).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from fauna.errors import FaunaError

log = logging.getLogger(__name__)

# Optional secret-as-env entries (kfp-kubernetes 2.17 writes `optional`) first work in
# backend 2.15.0 (commit 55ec846, kubeflow/pipelines#12216): a 2.14 driver drops the
# field and a missing Kaggle Secret fails the pod with CreateContainerConfigError.
MIN_BACKEND_VERSION = (2, 15, 0)
HOST_ENV = "KF_PIPELINES_ENDPOINT"  # kfp.Client reads these two as well
UI_ENV = "KF_PIPELINES_UI_ENDPOINT"
TOKEN_FILE_ENV = "KF_PIPELINES_SA_TOKEN_PATH"  # kfp's ServiceAccountTokenVolumeCredentials
TOKEN_ENV = "KF_PIPELINES_TOKEN"
COOKIES_ENV = "KF_PIPELINES_COOKIES"
NAMESPACE_ENV = "KF_PIPELINES_NAMESPACE"  # the chart sets it from the downward API
# Mounted with the Kubernetes API token; the chart's pods do not mount one.
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# The API server's own HTTP port (main.go `httpPortFlag`): it serves no UI.
API_SERVER_PORT = 8888


class SubmitError(FaunaError):
    """The cluster could not be reached or refused the request.

    `status` is the HTTP status of the answer, None when none came (a network error):
    what lets a caller tell a transient fault from a refusal.
    """

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ConnectOptions:
    """What the user said about the backend (flags and environment)."""

    host: str | None = None
    namespace: str | None = None
    token_file: str | None = None
    ui_url: str | None = None
    skip_version_check: bool = False


@dataclass
class Backend:
    """A checked connection: the kfp.Client and what the backend said about itself."""

    host: str
    client: Any
    multi_user: bool
    version: str
    namespace: str | None = None
    ui_url: str | None = None

    def run_link(self, run_id: str) -> str:
        """Where a person sees the run, or how to get a link when the host has no UI."""
        if not self.ui_url:
            return f"no UI link for API host {self.host} (give --ui-url or ${UI_ENV})"
        return f"{self.ui_url}/#/runs/details/{run_id}"


def resolve_host(host: str | None) -> str:
    host = host or os.environ.get(HOST_ENV)
    if not host:
        raise FaunaError(f"no Kubeflow Pipelines host: pass --host URL or set {HOST_ENV}")
    return host.rstrip("/")


def ui_base(ui_url: str | None, host: str) -> str | None:
    """The KFP UI: given, or the host itself unless it is the bare API server (port 8888).

    The UI (ml-pipeline-ui, or Kubeflow's /pipeline route) proxies /apis to the API
    server, so a host that is a UI serves both the API and `#/runs/details/<id>`.
    """
    base = ui_url or os.environ.get(UI_ENV)
    if base:
        return base.rstrip("/")
    return None if urlsplit(host).port == API_SERVER_PORT else host


def auth_settings(token_file: str | None) -> tuple[dict[str, Any], dict[str, str]]:
    """kfp.Client keyword arguments and the same credentials as HTTP headers.

    A token file is re-read for every request (kubelet rotates projected tokens); a
    token (`KF_PIPELINES_TOKEN`, e.g. `kubectl create token`) or Dex/oauth2-proxy
    session cookies (`KF_PIPELINES_COOKIES`) are used as given.
    """
    from kfp.client import ServiceAccountTokenVolumeCredentials

    kwargs: dict[str, Any] = {}
    headers: dict[str, str] = {}
    path = token_file or os.environ.get(TOKEN_FILE_ENV)
    token = os.environ.get(TOKEN_ENV)
    if path:
        if not Path(path).is_file():
            raise SubmitError(f"KFP token file {path} does not exist")
        kwargs["credentials"] = ServiceAccountTokenVolumeCredentials(path)
        headers["Authorization"] = "Bearer " + Path(path).read_text().strip()
    elif token:
        kwargs["existing_token"] = token
        headers["Authorization"] = "Bearer " + token
    cookies = os.environ.get(COOKIES_ENV)
    if cookies:
        kwargs["cookies"] = cookies
        headers["Cookie"] = cookies
    return kwargs, headers


def read_healthz(host: str, headers: dict[str, str]) -> dict[str, Any]:
    """The backend's healthz answer; one line when it is unreachable or not a KFP API."""
    url = f"{host}/apis/v2beta1/healthz"
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            body = resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        hint = " (authenticate: --token-file, $KF_PIPELINES_TOKEN or $KF_PIPELINES_COOKIES)"
        raise SubmitError(
            f"Kubeflow Pipelines at {host} answered the health check with HTTP {exc.code}"
            + (hint if exc.code in (401, 403) else "")
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SubmitError(f"cannot reach Kubeflow Pipelines at {host}: {reason}") from None
    try:
        health = json.loads(body)
    except json.JSONDecodeError:
        health = None
    if not isinstance(health, dict):
        raise SubmitError(
            f"{url} did not answer JSON (a login page?): authenticate with --token-file, "
            "$KF_PIPELINES_TOKEN or $KF_PIPELINES_COOKIES, or point --host at the KFP API"
        )
    if health.get("apiServerReady") is False:
        raise SubmitError(f"the KFP UI at {host} answers, but its API server is not ready")
    return {
        "tag_name": health.get("tag_name", health.get("apiServerTagName")),
        "multi_user": health.get("multi_user", health.get("apiServerMultiUser")),
    }


def parse_version(tag: str | None) -> tuple[int, int, int] | None:
    match = re.match(r"^v?(\d+)\.(\d+)\.(\d+)", (tag or "").strip())
    return tuple(int(g) for g in match.groups()) if match else None  # type: ignore[return-value]


def check_version(tag: str | None, host: str, skip: bool) -> None:
    """Refuse a backend older than 2.15, or one that does not say, unless told to go on."""
    floor = ".".join(map(str, MIN_BACKEND_VERSION))
    version = parse_version(tag)
    if version is not None and version >= MIN_BACKEND_VERSION:
        return
    if skip:
        log.warning("KFP backend version %r not checked (--skip-version-check)", tag)
        return
    if version is None:
        raise SubmitError(
            f"Kubeflow Pipelines at {host} does not report its version (healthz tag_name "
            f"{tag!r}; the 2.14 and 2.15 images leave it unset, kubeflow/pipelines#12795): "
            f"if `kubectl -n kubeflow get deploy ml-pipeline -o jsonpath='{{..image}}'` shows "
            f"{floor} or newer, pass --skip-version-check"
        )
    raise SubmitError(
        f"Kubeflow Pipelines at {host} is {tag}; fauna needs backend >= {floor} (optional "
        "Secret env vars, kubeflow/pipelines#12216): upgrade KFP, or --skip-version-check "
        "at your own risk"
    )


def kubeconfig_namespace() -> str | None:
    """The namespace of the kubeconfig's current context, if there is one."""
    paths = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    for path in paths.split(os.pathsep):
        try:
            config = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        current = config.get("current-context")
        for context in config.get("contexts") or []:
            if context.get("name") == current:
                return (context.get("context") or {}).get("namespace") or None
    return None


def resolve_namespace(explicit: str | None) -> tuple[str | None, str]:
    """The namespace to work in, and where it came from (for the log)."""
    if explicit:
        return explicit, "--namespace"
    if os.environ.get(NAMESPACE_ENV):
        return os.environ[NAMESPACE_ENV], f"${NAMESPACE_ENV}"
    if SERVICE_ACCOUNT_NAMESPACE.is_file():
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip(), "this pod's service account"
    found = kubeconfig_namespace()
    return found, "the kubeconfig's current context"


def connect(opts: ConnectOptions) -> Backend:
    """Check the backend (reachable, new enough, which mode) and return a client for it."""
    host = resolve_host(opts.host)
    kwargs, headers = auth_settings(opts.token_file)
    health = read_healthz(host, headers)
    tag = health.get("tag_name")
    check_version(tag, host, opts.skip_version_check)
    multi_user = bool(health.get("multi_user"))
    namespace = None
    if multi_user:
        namespace, source = resolve_namespace(opts.namespace)
        if not namespace:
            raise SubmitError(
                f"Kubeflow Pipelines at {host} runs in multi-user mode: give --namespace "
                f"(your profile namespace) or set ${NAMESPACE_ENV}"
            )
        log.info("multi-user KFP %s: namespace %s (from %s)", tag, namespace, source)
    elif opts.namespace:
        log.info("single-user KFP %s ignores --namespace %s", tag, opts.namespace)
    import kfp

    with warnings.catch_warnings(), quiet_stdout():
        warnings.simplefilter("ignore")
        # An explicit namespace keeps kfp.Client from guessing one and writing it to
        # ~/.config/kfp/context.json; every call below passes it again anyway.
        client = kfp.Client(host=host, namespace=namespace or "kubeflow", **kwargs)
    ui = ui_base(opts.ui_url, host)
    return Backend(host, client, multi_user, str(tag), namespace, ui)


@contextlib.contextmanager
def quiet_stdout():
    """kfp.Client prints links of its own ("Run details: ..."): log them instead."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield
    for line in buffer.getvalue().splitlines():
        log.debug("kfp: %s", line)


def error_text(body: Any) -> str:
    """The backend's own message from an error body, on one line."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    text = str(body or "").strip()
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        data = None
    if isinstance(data, dict):
        text = str(data.get("message") or data.get("error_message") or data.get("error") or text)
    return " ".join(text.split())[:500]


def api_call(what: str, fn, *args, **kwargs):
    """Call the API; its errors become one line that carries the backend's own message."""
    import urllib3
    from kfp_server_api.exceptions import ApiException

    try:
        with quiet_stdout():
            return fn(*args, **kwargs)
    except ApiException as exc:
        message = error_text(exc.body)
        raise SubmitError(
            f"{what} failed: HTTP {exc.status} {exc.reason}" + (f": {message}" if message else ""),
            status=exc.status,
        ) from None
    except (urllib3.exceptions.HTTPError, OSError, TimeoutError) as exc:
        raise SubmitError(f"{what} failed: {' '.join(str(exc).split())}") from None
