"""publish: upload a run to S3/MinIO; make its best model champion of its dataset if it wins.

Layout in the bucket:

    runs/<run-id>/models/<backbone>/     model.keras, export/, classes.json, preprocess.json, ...
    runs/<run-id>/report/                report.md, report.html (with the verdict), metrics.json
    runs/<run-id>/publish.json           what was published and the promotion decision
    models/<dataset>/champion.json       the champion pointer of one dataset (fauna.store.champion)
    models/<dataset>/history/...         one entry per publish decision, never overwritten

How it stays safe (fail closed: when in doubt, do not promote):

- A champion belongs to one dataset (name + class list): runs on other data never compare
  with it or replace it.
- A model flagged as degenerate is never promoted; a run whose models are all flagged
  has no candidate.
- Promotion is on evidence (fauna.score.policy, the `compare` config section): the candidate
  must beat no skill with 99% confidence (the first champion of a dataset too), and a
  champion only by a paired comparison on the same test images (`decide`).
- The champion is beaten only on the same test split: when the split changed, the
  current champion is re-evaluated on this run's split first; if that fails on an outage
  (e.g. S3 503), this run is not promoted, the records say why, and the step fails with a
  transient error (exit 75) so the pipeline's retry publishes again.
- Everything the pointer will name (models, report, publish.json) is uploaded and
  verified before the pointer moves, saying "not promoted yet" (pending); they say
  "promoted" only after the compare-and-swap succeeded, and "not promoted: <reason>"
  when the move failed. The pointer moves by compare-and-swap (conditional writes, on a
  store proven to enforce them, fauna.store.conditional_writes); on a conflict the decision is made
  again on the new champion.
- History records every pointer move exactly once: its entry is named by the move, so a
  retried publish after a lost reply finds it or writes it.
- A retried publish of the run that already is champion says so (promoted, "already
  the champion") instead of comparing the model with itself; the champion's model files
  are never overwritten by different ones.
- The step writes its own output folder (the report with the verdict, publish.json);
  its input report folder is left as it was.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fauna import logs
from fauna.config import Config
from fauna.contracts import (
    COMPARE_STEP,
    DATA_STEPS,
    PUBLISH_JSON,
    PUBLISH_STEP,
    REPORT_DIR,
    TRAIN_INFO,
    TRAIN_STEP,
    Comparison,
    Promotion,
    PublishResult,
)
from fauna.data.dataset import MANIFEST, read_manifest, write_json
from fauna.errors import FaunaError, TransientError
from fauna.model.artifact import model_backbone
from fauna.report.render import rerender_with_notes
from fauna.score.evaluation import score_model
from fauna.score.metrics import champion_value
from fauna.score.policy import (
    PREDICTIONS_DIR,
    PolicyError,
    Predictions,
    above_no_skill,
    challenge,
    skill_shortfall,
)
from fauna.step_output import require_output, step_output
from fauna.store import champion, registry, storage
from fauna.store.champion import ChampionError, DatasetId
from fauna.store.champion import summary as _summary

log = logging.getLogger(__name__)

STEP = PUBLISH_STEP
# How records name a promotion decided on but not yet made (the pointer has not moved).
PENDING = "not promoted yet"
# Checkpoints are for resuming training, not for using the model.
SKIP_ON_UPLOAD = ("checkpoints",)


class PublishError(FaunaError):
    """The run cannot be published as given (one line naming what does not fit)."""


def signature_of_test_split(data_dir: Path) -> str:
    """A hash of which images (by content) and labels make up the test split."""
    rows = sorted(
        (r["sha256"], r["label"])
        for r in read_manifest(Path(data_dir) / MANIFEST)
        if r["split"] == "test"
    )
    if not rows:
        raise PublishError(f"no test rows in {Path(data_dir) / MANIFEST}")
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------- uploads


def _upload_model(model_dir: Path, uri: str, champion_uri: str | None) -> None:
    """Upload one model, unless this very model is already there.

    Files of the current champion are never overwritten by different ones; an earlier,
    incomplete or different upload of a run that is not champion is replaced.
    """
    remote = storage.remote_files(uri)
    if remote:
        local = storage.local_files(model_dir, SKIP_ON_UPLOAD)
        same = (
            remote == local
            and storage.read_text(f"{uri}/{TRAIN_INFO}")
            == (Path(model_dir) / TRAIN_INFO).read_text()
        )
        if same:
            log.info("%s already holds this model (a retried publish): not uploaded again", uri)
            return
        if uri == champion_uri:
            raise PublishError(
                f"{uri} is the champion and holds another model: publish this one under a "
                "new run id"
            )
        log.warning("%s holds an earlier or incomplete upload: replacing it", uri)
        storage.delete_prefix(uri)
    n = storage.upload_verified(model_dir, uri, exclude=SKIP_ON_UPLOAD)
    log.info("uploaded %s files -> %s", n, uri)


# --------------------------------------------------------------------- deciding


@dataclass
class Rescored:
    """The champion's answers on this run's test split (what `decide` pairs with)."""

    predictions: Predictions
    flagged: str | None  # why the champion is degenerate on this split, if it is
    value: float | None  # its champion metric on this split
    basis: str  # how they were obtained, in words


def _rescore(model_uri: str, data_dir: Path, cfg: Config) -> Rescored:
    """The champion model re-evaluated on this run's test split: answers and verdict."""
    with tempfile.TemporaryDirectory(prefix="fauna-champion-") as tmp:
        model_dir = Path(tmp) / "model"
        storage.download_dir(model_uri, model_dir)
        scored = score_model(
            model_dir,
            data_dir,
            cfg.evaluate.top_confused_pairs,
            desc="re-evaluate champion",
            policy=cfg.compare,
        )
    value = champion_value(scored.metrics, cfg.compare.champion_metric)
    basis = "after re-evaluating the champion on this run's test split"
    return Rescored(scored.predictions(), scored.metrics["degenerate_reason"], value, basis)


def _stored_predictions(pointer: dict[str, Any]) -> Predictions | None:
    """The champion's answers saved by its own compare (runs/<id>/report/predictions/)."""
    run_uri, _, backbone = str(pointer.get("model_uri", "")).rpartition("/models/")
    if not run_uri or not backbone:
        return None
    uri = f"{run_uri}/report/{PREDICTIONS_DIR}/{backbone}.npz"
    if not storage.exists(uri):
        return None  # a champion published before predictions were kept
    with tempfile.TemporaryDirectory(prefix="fauna-champion-") as tmp:
        return Predictions.load(storage.download_file(uri, Path(tmp) / "p.npz"))


class Decider:
    """Decides for one candidate against whatever champion the pointer names (re-callable)."""

    def __init__(self, candidate: dict[str, Any], data_dir: Path, cfg: Config, report_dir: Path):
        self.candidate = candidate
        self.data_dir = data_dir
        self.cfg = cfg
        found = Path(report_dir) / PREDICTIONS_DIR / f"{candidate['backbone']}.npz"
        self.predictions = Predictions.load(found) if found.is_file() else None
        self._rescored: dict[str, Rescored | Exception] = {}
        self.pointer: dict[str, Any] | None = None  # the last pointer decided on
        self.current: dict[str, Any] | None = None  # the champion of the last decision
        # A re-evaluation that failed on an outage: the step fails (retryable), not "no".
        self.transient: TransientError | None = None

    def rescore(self, current: dict[str, Any]) -> Rescored:
        """The champion's answers on this split, once per publish (re-decisions reuse them).

        On the same test split, the answers its own compare saved; otherwise (or when
        there are none) the champion model re-evaluated here.
        """
        model_uri = current["model_uri"]
        if model_uri not in self._rescored:
            try:
                self._rescored[model_uri] = self._evidence(current)
            except Exception as exc:  # any failure here means "not promoted"
                log.debug("re-evaluating the champion failed", exc_info=True)
                self._rescored[model_uri] = exc
        found = self._rescored[model_uri]
        if isinstance(found, Exception):
            if isinstance(found, TransientError):
                self.transient = found
            raise found
        return found

    def _evidence(self, current: dict[str, Any]) -> Rescored:
        same = current.get("test_split_signature") == self.candidate["test_split_signature"]
        stored = _stored_predictions(current) if same else None
        if stored is not None:
            value = stored.value(self.cfg.compare.champion_metric)
            return Rescored(stored, None, value, "on the same test split")
        log.info("re-evaluating the champion (%s) on this run's test split", current["model_uri"])
        return _rescore(current["model_uri"], self.data_dir, self.cfg)

    def __call__(self, current: dict[str, Any] | None) -> tuple[Promotion, dict | None]:
        self.current, self.transient = current, None
        promotion = decide(
            self.candidate, current, self.rescore, self.cfg.compare, self.predictions
        )
        if not promotion.promoted or promotion.already_champion:
            return promotion, None
        pointer = {
            **self.candidate,
            "promoted_at": champion.now_stamp(),
            "reason": promotion.reason,
            "previous": None if current is None else _summary(current),
        }
        self.pointer = pointer
        return promotion, pointer


def decide(
    candidate: dict[str, Any],
    current: dict[str, Any] | None,
    rescore: Any,
    policy: Any,
    predictions: Predictions | None,
) -> Promotion:
    """Promote or not, and why, by fauna.score.policy (the `compare` section is `policy`).

    `predictions` are the candidate's answers per test image; `rescore(pointer)` gives the
    champion's on this run's test split (a `Rescored`). One chain of cases, each returning
    at once (longer than usual: splitting it would scatter the order they are checked in).
    """
    metric = policy.champion_metric
    value = candidate["value"]
    dataset = candidate["dataset"]

    def verdict(promoted: bool, reason: str, current_value: float | None = None, **kw: Any):
        return Promotion(promoted, reason, metric, value, current_value, **kw)

    if (
        current is not None
        and current.get("dataset", {}).get("key", dataset["key"]) != (dataset["key"])
    ):
        return verdict(
            False,
            f"the champion pointer names a model of dataset "
            f"{current['dataset'].get('key')}, not {dataset['key']}: fix the pointer",
        )
    if (
        current is not None
        and current.get("run_id") == candidate["run_id"]
        and (current.get("model_uri") == candidate["model_uri"])
    ):
        return verdict(
            True,
            f"this run is already the champion (promoted at {current.get('promoted_at')}: "
            f"{current.get('reason', 'no reason recorded')})",
            current.get("value"),
            already_champion=True,
        )
    if predictions is None:
        return verdict(
            False,
            f"this run's report holds no per-image predictions ({PREDICTIONS_DIR}/): "
            "no evidence to promote on; run evaluate and compare again",
        )
    shortfall = skill_shortfall(predictions, metric, policy)
    if shortfall:
        return verdict(False, f"{candidate['backbone']} is {shortfall}")
    if current is None:
        return verdict(
            True,
            f"the first champion of dataset {dataset['name']} ({dataset['key']}): "
            f"{above_no_skill(predictions, metric, policy)}",
        )
    try:
        found = rescore(current)
    except Exception as exc:  # an unreadable champion is never "no champion"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return verdict(
            False,
            f"the current champion ({current.get('run_id')}, "
            f"{current.get('backbone')}) could not be re-evaluated on this run's "
            f"test split ({reason}): not promoted; publish again when it can",
        )
    if found.flagged:
        return verdict(
            True,
            f"the champion ({current.get('backbone')}) is degenerate on this "
            f"run's test split: {found.flagged}",
            found.value,
        )
    try:
        promoted, evidence, _ = challenge(predictions, found.predictions, metric, policy)
    except PolicyError as exc:
        return verdict(False, f"{exc}: not promoted", found.value)
    return verdict(promoted, f"{evidence} ({found.basis})", found.value)


# ------------------------------------------------------------------- publishing


def _candidate(
    comparison: Comparison,
    model_uris: dict[str, str],
    run_id: str,
    data_dir: Path,
    dataset: DatasetId,
    cfg: Config,
) -> dict[str, Any] | None:
    """This run's champion as a pointer would name it; None when compare crowned no model."""
    best = comparison.champion
    if best is None:
        return None
    backbone = best["backbone"]
    if backbone not in model_uris:
        raise PublishError(
            f"the comparison's champion {backbone!r} has no model among {sorted(model_uris)}"
        )
    metric = cfg.compare.champion_metric
    value = champion_value(comparison.backbones[backbone], metric)
    if value is None:
        raise PublishError(f"the comparison has no {metric!r} for {backbone}")
    return {
        "run_id": run_id,
        "backbone": backbone,
        "metric": metric,
        "value": value,
        "model_uri": model_uris[backbone],
        "test_split_signature": signature_of_test_split(data_dir),
        "synthetic": comparison.synthetic,
        "dataset": dataset.to_dict(),
    }


class Artifacts:
    """Writes what the run publishes for a verdict: the report with it, publish.json.

    `pending` runs before every pointer write (so the pointer never names a run whose
    report and publish.json are missing) and says "not promoted yet"; the final verdict is
    written once the pointer has moved (or did not).
    """

    def __init__(self, report_dir: Path, tmp: Path, base: PublishResult, subject: str):
        self.report_dir, self.tmp, self.base, self.subject = report_dir, tmp, base, subject
        self.published: Promotion | None = None

    def pending(self, promotion: Promotion) -> None:
        reason = f"{PENDING}: the champion pointer is being moved ({promotion.reason})"
        self._write(replace(promotion, promoted=False, reason=reason), PENDING)
        self.published = None

    def __call__(self, promotion: Promotion) -> None:
        self._write(promotion, "promoted to champion" if promotion.promoted else "not promoted")
        self.published = promotion

    def _write(self, promotion: Promotion, verdict: str) -> None:
        report = self.tmp / REPORT_DIR
        if report.exists():
            shutil.rmtree(report)
        reason = promotion.reason.removeprefix(f"{PENDING}: ")
        note = f"Publishing: {self.subject} was {verdict}: {reason}."
        rerender_with_notes(self.report_dir, report, [note])
        storage.upload_verified(report, self.base.report_uri)
        result = replace(self.base, promotion=promotion)
        write_json(self.tmp / PUBLISH_JSON, result.to_dict())
        text = json.dumps(result.to_dict(), indent=2)
        uri = f"{self.base.run_uri}/{PUBLISH_JSON}"
        storage.write_text(uri, text, content_type=champion.JSON)
        if storage.read_text(uri) != text:
            raise PublishError(f"{uri} does not hold what was just written")

    def not_moved(self, failure: Exception, value: float | None) -> None:
        """After a failed move: records say "not promoted: <reason>" (best effort)."""
        first = str(failure).splitlines()[0] if str(failure) else type(failure).__name__
        reason = f"the champion pointer was not moved ({first}); publish again"
        try:
            self(Promotion(False, reason, self.base.promotion.metric, value, None))
        except Exception as exc:  # the store may still be failing: the step fails anyway
            log.warning("could not write the records of the failed move: %s", exc)


def _inputs(report_dir: Path, model_dirs: list[Path], data_dir: Path) -> DatasetId:
    """Check the inputs are the right step outputs, of one dataset; returns the dataset."""
    require_output(report_dir, COMPARE_STEP, role="--report")
    for model_dir in model_dirs:
        require_output(model_dir, TRAIN_STEP, role="--models")
    require_output(data_dir, DATA_STEPS, role="--data")
    dataset = DatasetId.from_folder(data_dir)
    reported = Comparison.read(report_dir).dataset.get("key")
    if reported != dataset.key:
        raise PublishError(
            f"the report is of dataset {reported} but --data is {dataset.key}: "
            "publish a report with the data it was made from"
        )
    return dataset


def publish_run(
    report_dir: Path,
    model_dirs: list[Path],
    data_dir: Path,
    run_id: str,
    out: Path,
    cfg: Config,
) -> PublishResult:
    """Upload the run under runs/<run-id>/ and move its dataset's champion pointer if it wins."""
    report_dir, data_dir = Path(report_dir), Path(data_dir)
    dataset = _inputs(report_dir, model_dirs, data_dir)
    bucket = cfg.pipeline.bucket
    storage.check_bucket(f"s3://{bucket}")
    run_uri = f"s3://{bucket}/runs/{run_id}"
    comparison = Comparison.read(report_dir)
    current = champion.read_pointer(bucket, dataset.key)
    champion_uri = current[0].get("model_uri") if current else None
    with step_output(Path(out), STEP) as tmp:
        model_uris = {}
        for model_dir in model_dirs:
            backbone = model_backbone(model_dir)
            model_uris[backbone] = f"{run_uri}/models/{backbone}"
            _upload_model(model_dir, model_uris[backbone], champion_uri)
        candidate = _candidate(comparison, model_uris, run_id, data_dir, dataset, cfg)
        base = PublishResult(
            run_id,
            run_uri,
            f"{run_uri}/report",
            model_uris,
            champion.pointer_uri(bucket, dataset.key),
            dataset.to_dict(),
            Promotion(False, "", cfg.compare.champion_metric, None, None),
        )
        subject = candidate["backbone"] if candidate else "no model of this run"
        artifacts = Artifacts(report_dir, tmp, base, subject)
        decider = Decider(candidate, data_dir, cfg, report_dir) if candidate else None
        promotion, rounds = _promote(decider, comparison, bucket, dataset, artifacts, cfg)
        _record(bucket, dataset, run_id, decider, promotion, rounds)
        if artifacts.published is not promotion:
            artifacts(promotion)
    log.info("%s: %s", "PROMOTED" if promotion.promoted else "not promoted", promotion.reason)
    result = replace(base, promotion=promotion)
    # The registry mirrors the decision (optional; a failure there is one warning line).
    registry.after_publish(result.to_dict(), cfg, candidate and candidate["test_split_signature"])
    return result


def _promote(
    decider: Decider | None,
    comparison: Comparison,
    bucket: str,
    dataset: DatasetId,
    artifacts: Artifacts,
    cfg: Config,
) -> tuple[Promotion, int]:
    """The final verdict, and how many compare-and-swap rounds it took (0: none tried)."""
    metric = cfg.compare.champion_metric
    if decider is None:
        flagged = "; ".join(f"{b}: {r}" for b, r in comparison.flagged.items())
        reason = f"every model of this run is flagged as degenerate ({flagged})"
        return Promotion(False, reason, metric, None, None), 0
    try:
        promotion, rounds = champion.move_pointer(bucket, dataset.key, decider, artifacts.pending)
    except ChampionError as exc:  # the pointer kept changing, or cannot be parsed
        value = decider.candidate["value"]
        return Promotion(False, f"{exc}: not promoted", metric, value, None), champion.MAX_ATTEMPTS
    except FaunaError as exc:  # e.g. the pointer write failed, or the store was refused
        if not getattr(exc, "pointer_may_have_moved", False):
            artifacts.not_moved(exc, decider.candidate["value"])
        raise
    if decider.transient is not None and not promotion.promoted:
        artifacts(promotion)  # the records say why; the step fails so that it is retried
        raise TransientError(promotion.reason)
    return promotion, rounds


def _record(
    bucket: str,
    dataset: DatasetId,
    run_id: str,
    decider: Decider | None,
    promotion: Promotion,
    rounds: int,
) -> None:
    """One history entry for this decision; a pointer move's entry exactly once."""
    moved = promotion.promoted and not promotion.already_champion
    new = decider.pointer if decider is not None and moved else None
    current = None if decider is None else decider.current
    candidate = None if decider is None else _summary(decider.candidate)
    decision = dataclasses.asdict(promotion)
    uri = champion.record_decision(
        bucket, dataset.key, run_id, decision, rounds, candidate, new, current
    )
    log.info("history: %s", uri)


def champion_after(result: PublishResult, bucket: str) -> dict[str, Any] | None:
    """The dataset's champion once this run's decision is made, as the pipeline's `champion`
    Model output describes it (None when the dataset has none): where its SavedModel
    export is, what it scored, which run made it, and whether this run promoted or kept it.
    """
    from fauna.model.artifact import EXPORT_DIR

    found = champion.read_pointer(bucket, result.dataset["key"])
    if found is None or not found[0].get("model_uri"):
        return None
    pointer = found[0]
    model_uri = str(pointer["model_uri"]).rstrip("/")
    mine = pointer.get("run_id") == result.run_id
    return {
        "export_uri": f"{model_uri}/{EXPORT_DIR}",
        "model_uri": model_uri,
        "dataset": result.dataset["key"],
        "dataset_name": result.dataset.get("name", ""),
        "backbone": pointer.get("backbone", ""),
        "metric": pointer.get("metric", ""),
        "value": pointer.get("value"),
        "run_id": pointer.get("run_id", ""),
        "decided_by_run": result.run_id,
        "promoted": bool(result.promotion.promoted and mine),
        "decision": "promoted" if result.promotion.promoted and mine else "kept",
        "reason": result.promotion.reason,
        "pointer_uri": result.champion_uri,
    }


# ---------------------------------------------------------------------------- CLI


def add_arguments(parser: Any) -> None:
    parser.add_argument("--report", required=True, help="compare step output folder")
    parser.add_argument("--models", nargs="+", required=True, help="train step output folders")
    parser.add_argument(
        "--data", required=True, help="the split or augment output the models were tested on"
    )
    parser.add_argument(
        "--run-id", required=True, help="name of this run under runs/ in the bucket"
    )
    parser.add_argument(
        "--out", required=True, help="folder for publish.json and the report with the verdict"
    )


def run(args: Any, cfg: Config) -> int:
    result = publish_run(
        Path(args.report),
        [Path(m) for m in args.models],
        Path(args.data),
        args.run_id,
        Path(args.out),
        cfg,
    )
    logs.result(result.to_dict())  # the summary is logged; this is for a pipe or a file
    return 0
