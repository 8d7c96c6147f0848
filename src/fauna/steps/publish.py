"""Publish a run to S3/MinIO and move the champion pointer only when it is beaten.

Layout in the bucket:

    runs/<run-id>/report/          report.md, report.html, metrics.json, plots
    runs/<run-id>/models/<name>/   model.keras, export/, classes.json, preprocess.json, ...
    runs/<run-id>/publish.json     what was published and the promotion decision
    models/champion/champion.json  the pointer: run, backbone, metric, value, model URI
    models/champion/history/       every earlier pointer, so a promotion can be undone

The champion moves only when the new best model beats it on the configured metric,
measured on the same test split: when the test split changed (new data), the
current champion is first re-evaluated on the new test split. That is what makes
scheduled retraining safe.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fauna import storage
from fauna.config import Config
from fauna.dataset import MANIFEST, DatasetError, read_json, read_manifest
from fauna.steps.compare import add_report_notes, champion_value

log = logging.getLogger(__name__)

CHAMPION_KEY = "models/champion/champion.json"
# Checkpoints are for resuming training, not for using the model.
SKIP_ON_UPLOAD = ("checkpoints",)


@dataclass
class Promotion:
    promoted: bool
    reason: str
    metric: str
    candidate_value: float
    champion_value: float | None


@dataclass
class PublishResult:
    run_id: str
    run_uri: str
    report_uri: str
    model_uris: dict[str, str]
    champion_uri: str
    promotion: Promotion

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def metric_value(metrics: dict[str, Any], metric: str) -> float:
    """The champion metric of one evaluation (compare's definition), or a clear error."""
    value = champion_value(metrics, metric)
    if value is None:
        raise DatasetError(f"metric {metric!r} not in the evaluation ({', '.join(metrics)})")
    return value


def signature_of_test_split(data_dir: Path) -> str:
    """A hash of which images (by content) and labels make up the test split."""
    rows = sorted(
        (r["sha256"], r["label"])
        for r in read_manifest(data_dir / MANIFEST)
        if r["split"] == "test"
    )
    if not rows:
        raise DatasetError(f"no test rows in {data_dir / MANIFEST}")
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


def read_champion(bucket: str) -> dict[str, Any] | None:
    uri = f"s3://{bucket}/{CHAMPION_KEY}"
    return json.loads(storage.read_text(uri)) if storage.exists(uri) else None


def _rescore_champion(champion: dict[str, Any], data_dir: Path, cfg: Config, metric: str) -> float:
    """Evaluate the current champion model on this run's test split."""
    from fauna.steps.evaluate import evaluate_model

    with tempfile.TemporaryDirectory(prefix="fauna-champion-") as tmp:
        model_dir = Path(tmp) / "model"
        storage.download_dir(champion["model_uri"], model_dir)
        metrics = evaluate_model(model_dir, data_dir, Path(tmp) / "eval", cfg.evaluate)
    return metric_value(metrics, metric)


def decide(
    candidate: dict[str, Any],
    champion: dict[str, Any] | None,
    data_dir: Path,
    cfg: Config,
) -> Promotion:
    metric = cfg.compare.champion_metric
    value = candidate["value"]
    if champion is None:
        return Promotion(True, "no champion yet", metric, value, None)
    same_split = champion.get("test_split_signature") == candidate["test_split_signature"]
    if champion.get("metric") == metric and same_split:
        current = float(champion["value"])
        basis = "on the same test split"
    else:
        log.info(f"re-evaluating the champion ({champion['model_uri']}) on this run's test split")
        try:
            current = _rescore_champion(champion, data_dir, cfg, metric)
        except Exception as exc:  # an unreadable champion must not block every future run
            return Promotion(
                True, f"the current champion could not be re-evaluated ({exc})", metric, value, None
            )
        basis = "after re-evaluating the champion on this run's test split"
    if value > current:
        return Promotion(
            True,
            f"{metric} {value:.4f} beats the champion's {current:.4f} {basis}",
            metric,
            value,
            current,
        )
    return Promotion(
        False,
        f"{metric} {value:.4f} does not beat the champion's {current:.4f} {basis}",
        metric,
        value,
        current,
    )


def publish_run(
    report_dir: Path,
    model_dirs: list[Path],
    data_dir: Path,
    run_id: str,
    cfg: Config,
) -> PublishResult:
    """Upload the report and models under runs/<run-id>/ and update the champion pointer."""
    bucket = cfg.pipeline.bucket
    storage.check_bucket(f"s3://{bucket}")
    run_uri = f"s3://{bucket}/runs/{run_id}"
    comparison = read_json(report_dir / "metrics.json")
    best = comparison["champion"]["backbone"]

    model_uris: dict[str, str] = {}
    for model_dir in model_dirs:
        backbone = read_json(model_dir / "train_info.json")["backbone"]
        model_uris[backbone] = f"{run_uri}/models/{backbone}"
        n = storage.upload_dir(model_dir, model_uris[backbone], exclude=SKIP_ON_UPLOAD)
        log.info(f"uploaded {backbone}: {n} files -> {model_uris[backbone]}")
    if best not in model_uris:
        raise DatasetError(
            f"the comparison's champion {best!r} has no model among {list(model_uris)}"
        )

    metric = cfg.compare.champion_metric
    candidate = {
        "run_id": run_id,
        "backbone": best,
        "metric": metric,
        "value": metric_value(comparison["backbones"][best], metric),
        "model_uri": model_uris[best],
        "test_split_signature": signature_of_test_split(data_dir),
        "synthetic": bool(comparison.get("synthetic", False)),
    }
    champion = read_champion(bucket)
    promotion = decide(candidate, champion, data_dir, cfg)
    log.info(("PROMOTED: " if promotion.promoted else "not promoted: ") + promotion.reason)
    if promotion.promoted:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        if champion is not None:
            storage.write_text(
                f"s3://{bucket}/models/champion/history/{stamp}-{champion['run_id']}.json",
                json.dumps(champion, indent=2),
                content_type="application/json",
            )
        pointer = {**candidate, "promoted_at": stamp, "reason": promotion.reason}
        storage.write_text(
            f"s3://{bucket}/{CHAMPION_KEY}",
            json.dumps(pointer, indent=2),
            content_type="application/json",
        )

    _add_promotion_note(report_dir, promotion, candidate)
    report_uri = f"{run_uri}/report"
    storage.upload_dir(report_dir, report_uri)
    result = PublishResult(
        run_id=run_id,
        run_uri=run_uri,
        report_uri=report_uri,
        model_uris=model_uris,
        champion_uri=f"s3://{bucket}/{CHAMPION_KEY}",
        promotion=promotion,
    )
    storage.write_text(
        f"{run_uri}/publish.json",
        json.dumps(result.to_dict(), indent=2),
        content_type="application/json",
    )
    return result


def _add_promotion_note(report_dir: Path, promotion: Promotion, candidate: dict[str, Any]) -> None:
    """Say in the report itself whether this run's best model became the champion, and why."""
    verdict = "promoted to champion" if promotion.promoted else "not promoted"
    add_report_notes(
        report_dir,
        [f"Publishing: {candidate['backbone']} was {verdict}: {promotion.reason}."],
    )


def add_arguments(parser: Any) -> None:
    parser.add_argument("--report", required=True, help="compare step output folder")
    parser.add_argument("--models", nargs="+", required=True, help="train step output folders")
    parser.add_argument(
        "--data", required=True, help="the dataset folder the models were tested on"
    )
    parser.add_argument(
        "--run-id", required=True, help="name of this run under runs/ in the bucket"
    )


def run(args: Any, cfg: Config) -> int:
    result = publish_run(
        Path(args.report), [Path(m) for m in args.models], Path(args.data), args.run_id, cfg
    )
    print(json.dumps(result.to_dict(), indent=2))
    return 0
