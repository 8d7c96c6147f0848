"""The Kubeflow Model Registry: every published model as a version, the champion marked.

Optional: on when `model_registry.url` is set (or MODEL_REGISTRY_URL, which overrides it,
as S3_ENDPOINT_URL does for storage). After publish has decided and the champion pointer
is where it will stay, `after_publish` registers the run:

- one `RegisteredModel` per dataset, named after its display name (the dataset key is a
  custom property; another dataset with the same name gets "<name> (<key>)");
- one `ModelVersion` per trained model, named `<run id>/<backbone>`, with its metrics,
  data version (dataset key, test split signature), class list, git SHA and KFP run id as
  custom properties, and one `ModelArtifact`: the SavedModel export, format `tensorflow`;
- the version the champion pointer names carries `champion=true` and `promoted_at`; every
  other version of the dataset `champion=false` (string values: the registry UI lists them).

The S3 pointer stays the truth: a registry that is down or refuses costs one warning line,
never the publish, and `fauna register --run RUN_ID` does the same later from the bucket
(it is idempotent: versions already there are updated, not duplicated).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import warnings
from dataclasses import dataclass, field
from typing import Any

from fauna.config import Config
from fauna.contracts import (
    CLASSES,
    COMPARISON,
    PUBLISH_JSON,
    TRAIN_INFO,
    Classes,
    Comparison,
    PublishResult,
    TrainInfo,
    parse_document,
    parse_json,
)
from fauna.errors import FaunaError
from fauna.model.artifact import EXPORT_DIR
from fauna.score.metrics import METRIC_KEYS
from fauna.store import champion, storage

log = logging.getLogger(__name__)

URL_ENV = "MODEL_REGISTRY_URL"
GIT_SHA_ENV = "FAUNA_GIT_SHA"
MODEL_FORMAT = "tensorflow"
MODEL_FORMAT_VERSION = "2"
CHAMPION = "champion"


class RegistryError(FaunaError):
    """The registry cannot be used or refused a request (one line: what and why)."""


@dataclass
class VersionSpec:
    """What one trained model of a run becomes in the registry."""

    backbone: str
    name: str
    uri: str
    description: str
    properties: dict[str, Any] = field(default_factory=dict)


def registry_url(cfg: Config) -> str:
    return os.environ.get(URL_ENV) or cfg.model_registry.url


def git_sha(train_info: dict[str, Any]) -> str:
    """The code's revision: as train recorded it, else the image's, else this checkout's."""
    recorded = train_info.get("git_sha") or os.environ.get(GIT_SHA_ENV)
    if recorded:
        return str(recorded)
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "unknown"


# ------------------------------------------------------------------ what to register


def version_specs(published: dict[str, Any], test_split: str | None = None) -> list[VersionSpec]:
    """The versions of a published run (publish.json's content), read from the bucket."""
    run_id, dataset = published["run_id"], published["dataset"]
    where = f"{published['report_uri']}/{COMPARISON}"
    comparison = Comparison.from_json(parse_document(storage.read_text(where), where), where)
    specs = []
    for backbone, model_uri in sorted(published["model_uris"].items()):
        where = f"{model_uri}/{CLASSES}"
        classes = Classes.from_json(parse_json(storage.read_text(where), where), where).to_json()
        where = f"{model_uri}/{TRAIN_INFO}"
        info = TrainInfo.from_json(parse_document(storage.read_text(where), where), where)
        scores = comparison.backbones.get(backbone, {})
        metrics = {
            f"metric.{k}": float(scores[k])
            for k in METRIC_KEYS
            if isinstance(scores.get(k), int | float) and not isinstance(scores.get(k), bool)
        }
        properties = {
            "backbone": backbone,
            "dataset_key": dataset["key"],
            "dataset_name": dataset["name"],
            "data_version": dataset["key"] + (f"/test-{test_split}" if test_split else ""),
            "classes": json.dumps(classes),
            "num_classes": len(classes),
            "git_sha": git_sha(info.to_json()),
            "kfp_run_id": run_id,
            "run_uri": published["run_uri"],
            "model_uri": model_uri,
            "image_size": info.image_size,
            "degenerate": str(bool(scores.get("degenerate", False))).lower(),
            CHAMPION: "false",
            **metrics,
            **({"test_split_signature": test_split} if test_split else {}),
        }
        specs.append(
            VersionSpec(
                backbone,
                f"{run_id}/{backbone}",
                f"{model_uri}/{EXPORT_DIR}",
                f"{backbone} trained by fauna run {run_id} on {dataset['name']}",
                properties,
            )
        )
    return specs


def champion_version(bucket: str, dataset_key: str) -> tuple[str, str] | None:
    """(version name, promoted_at) of the model the champion pointer names, if any."""
    found = champion.read_pointer(bucket, dataset_key)
    if found is None:
        return None
    pointer = found[0]
    return f"{pointer['run_id']}/{pointer['backbone']}", str(pointer.get("promoted_at", ""))


# ---------------------------------------------------------------------- the client


class Registry:
    """The official client (`model-registry`), every call bounded by a timeout."""

    def __init__(self, url: str, cfg: Config):
        try:
            from model_registry import ModelRegistry
        except ImportError:
            raise RegistryError(
                "the model-registry client is not installed: pip install 'fauna[registry]'"
            ) from None
        self.loop = asyncio.new_event_loop()
        timeout = cfg.model_registry.timeout_seconds

        def run(coro):
            return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "User access token is missing" (plain HTTP)
                self.client = ModelRegistry(
                    url,
                    author=cfg.model_registry.author,
                    async_runner=run,
                    log_level=logging.ERROR,  # not its port-80 hint on every call
                )
        except BaseException:
            self.loop.close()
            raise

    def close(self) -> None:
        self.loop.close()

    def registered_model(self, dataset: dict[str, Any]) -> tuple[str, Any]:
        """The name of the dataset's RegisteredModel, and the model when it exists already.

        Its name is the dataset's display name; when that name belongs to another dataset
        (by `dataset_key`), "<name> (<key>)".
        """
        for name in (dataset["name"], f"{dataset['name']} ({dataset['key']})"):
            found = self.client.get_registered_model(name)
            if (
                found is None
                or (found.custom_properties or {}).get("dataset_key") == dataset["key"]
            ):
                return name, found
        raise RegistryError(f"registered models {dataset['name']!r} belong to other datasets")

    def describe(self, name: str, dataset: dict[str, Any]) -> Any:
        """Say on a new RegisteredModel which dataset it is (the UI shows both)."""
        rm = self.client.get_registered_model(name)
        rm.description = f"fauna models of dataset {dataset['name']} ({dataset['key']})"
        rm.custom_properties = {
            **(rm.custom_properties or {}),
            "dataset_key": dataset["key"],
            "num_classes": int(dataset.get("num_classes") or 0),
        }
        return self.client.update(rm)

    def put_version(self, name: str, spec: VersionSpec) -> Any:
        """Register the version (and its artifact), or update one registered before."""
        found = self.client.get_model_version(name, spec.name) if self.exists(name) else None
        if found is not None:  # registered before (a backfill, a retried publish)
            old = dict(found.custom_properties or {})
            found.custom_properties = {
                **old,
                **spec.properties,
                CHAMPION: old.get(CHAMPION, "false"),
            }
            return self.client.update(found)
        self.client.register_model(
            name,
            spec.uri,
            model_format_name=MODEL_FORMAT,
            model_format_version=MODEL_FORMAT_VERSION,
            version=spec.name,
            version_description=spec.description,
            metadata=spec.properties,
        )
        return self.client.get_model_version(name, spec.name)

    def exists(self, name: str) -> bool:
        return self.client.get_registered_model(name) is not None

    def mark_champion(self, name: str, version_name: str, promoted_at: str) -> str | None:
        """`champion=true` on that version, `false` on every other one that says true."""
        marked = None
        for version in list(self.client.get_model_versions(name)):
            props = dict(version.custom_properties or {})
            if version.name == version_name:
                marked = version.id
                if props.get(CHAMPION) == "true" and props.get("promoted_at") == promoted_at:
                    continue
                props.update({CHAMPION: "true", "promoted_at": promoted_at})
            elif props.get(CHAMPION) == "true":
                props.update({CHAMPION: "false", "replaced_at": champion.now_stamp()})
            else:
                continue
            version.custom_properties = props
            self.client.update(version)
        return marked


# ------------------------------------------------------------------------ registering


def one_line(exc: BaseException) -> str:
    """A client or network failure as one line (the client's own text spans many)."""
    status = getattr(exc, "status", None)
    if status is not None:
        body = getattr(exc, "body", None) or ""
        try:
            message = json.loads(body).get("message", "")
        except (ValueError, AttributeError):
            message = str(body)
        return f"HTTP {status} {getattr(exc, 'reason', '') or ''}: {message}".strip(": ")
    if isinstance(exc, asyncio.TimeoutError):
        return "no answer in time"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def register_run(
    published: dict[str, Any], cfg: Config, test_split: str | None = None
) -> dict[str, Any]:
    """Register every model of a published run and mark the dataset's champion.

    Raises RegistryError (one line) when the registry is off, down or refuses.
    """
    url = registry_url(cfg)
    if not url:
        raise RegistryError(f"no model registry configured: set model_registry.url or {URL_ENV}")
    specs = version_specs(published, test_split)
    current = champion_version(cfg.pipeline.bucket, published["dataset"]["key"])
    try:
        registry = Registry(url, cfg)
    except RegistryError:
        raise
    except Exception as exc:  # connection refused, HTTP errors, timeouts: one line
        raise RegistryError(f"model registry at {url}: {one_line(exc)}") from None
    try:
        name, rm = registry.registered_model(published["dataset"])
        versions = {spec.name: registry.put_version(name, spec).id for spec in specs}
        if rm is None:
            rm = registry.describe(name, published["dataset"])
        marked = registry.mark_champion(name, *current) if current else None
    except RegistryError:
        raise
    except Exception as exc:
        raise RegistryError(f"model registry at {url}: {one_line(exc)}") from None
    finally:
        registry.close()
    summary = {
        "registry": url,
        "registered_model": rm.name,
        "registered_model_id": rm.id,
        "versions": versions,
        "champion": current[0] if current and marked else None,
    }
    champion = f", champion {current[0]}" if current and marked else ""
    log.info("model registry: %d version(s) of %r registered%s", len(versions), rm.name, champion)
    return summary


def after_publish(
    published: dict[str, Any], cfg: Config, test_split: str | None = None
) -> dict[str, Any] | None:
    """Publish's hook: register the run when a registry is configured; never raises.

    Called after the champion pointer has moved (or not): a registry failure is one
    warning line and `fauna register --run <id>` catches up later.
    """
    if not registry_url(cfg):
        return None
    try:
        return register_run(published, cfg, test_split)
    except Exception as exc:  # the registry is a mirror: it never fails the publish
        reason = str(exc) if isinstance(exc, FaunaError) else one_line(exc)
        log.warning(
            "model registry not updated (%s); the champion pointer is unaffected: "
            "run `fauna register --run %s` later",
            reason,
            published.get("run_id"),
        )
        return None


# ---------------------------------------------------------------------------- CLI


def add_arguments(parser: Any) -> None:
    parser.add_argument(
        "--run", required=True, metavar="RUN_ID", help="a published run (runs/<id>/ in the bucket)"
    )


def run(args: Any, cfg: Config) -> int:
    """`fauna register --run RUN_ID`: (re-)register a published run from the bucket."""
    if not registry_url(cfg):
        raise RegistryError(f"no model registry configured: set model_registry.url or {URL_ENV}")
    uri = f"s3://{cfg.pipeline.bucket}/runs/{args.run}/{PUBLISH_JSON}"
    found = storage.read_text_with_etag(uri)
    if found is None:
        raise RegistryError(f"{uri} not found: publish the run first")
    published = PublishResult.from_json(parse_document(found[0], uri), uri).to_json()
    print(json.dumps(register_run(published, cfg), indent=2))
    return 0
