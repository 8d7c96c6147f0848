"""Per-epoch checkpoints: model and state as one unit, the last two kept, locally and in S3.

Local layout (beside the output folder, so a crash does not take them with it):

    <dir>/epoch-0004/model.keras        the model with its optimizer state
    <dir>/epoch-0004/best.weights.npz   EarlyStopping's best weights, when not this epoch's
    <dir>/epoch-0004/state.json         phase, epoch, callback counters, history, and the
                                        size and sha256 of each file above (written last)

An epoch folder is written as `epoch-0004.partial/` and renamed into place when
complete: a kill at any moment leaves either the whole unit or a `.partial` folder
that is ignored and removed. In S3 (`checkpoint_uri`) the same files are uploaded
under `<uri>/epoch-0004/`, `state.json` last: an epoch without its state.json (an
upload cut short) is not a checkpoint. Resuming takes the newest epoch whose state
reads, whose files match the sizes and digests it records, and whose model loads;
a damaged one is skipped with a one-line warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fauna.training import TrainError

log = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
BEST_WEIGHTS_FILE = "best.weights.npz"
STATE_FILE = "state.json"
PARTIAL = ".partial"
REPLACED = ".replaced"
KEEP = 2
EPOCH_DIR = re.compile(r"^epoch-(\d{4,})$")


@dataclass
class TrainingState:
    """Everything besides the weights that a resumed run needs (state.json)."""

    fingerprint: str
    phase: str
    epoch: int  # the last completed epoch (global numbering from 0)
    phase_done: bool  # the phase ended with this epoch (its last, or an early stop)
    lr: float
    early_stopping: dict | None
    reduce_lr: dict | None
    decay: dict | None
    history: list[dict]
    files: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingState:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


@dataclass
class Checkpoint:
    state: TrainingState
    model: Any
    best_weights: list | None  # None: this epoch's weights are the best (or no best yet)
    where: str


class DamagedCheckpoint(Exception):
    """One checkpoint cannot be used (the caller falls back to the one before)."""


def epoch_dir_name(epoch: int) -> str:
    """The folder of the checkpoint after `epoch` (0-based): epoch-0001 after the first."""
    return f"epoch-{epoch + 1:04d}"


def newest_first(names: Any) -> list[str]:
    """Epoch folder names, the newest first (by number: epoch-10000 after epoch-9999)."""
    return sorted(names, key=lambda name: int(EPOCH_DIR.match(name).group(1)), reverse=True)


def file_digest(path: Path) -> dict[str, Any]:
    sha = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha.update(chunk)
    return {"size": path.stat().st_size, "sha256": sha.hexdigest()}


class CheckpointStore:
    """The checkpoints of one training run in `directory`, mirrored to `remote` (s3://)."""

    def __init__(self, directory: Path, remote: str | None, fingerprint: str) -> None:
        self.dir = Path(directory)
        self.remote = remote.rstrip("/") if remote else None
        self.fingerprint = fingerprint

    # ------------------------------------------------------------------ saving

    def save(self, model: Any, state: TrainingState, best_weights: list | None) -> None:
        """Write the epoch's unit locally (one rename makes it visible), then mirror it."""
        import numpy as np

        name = epoch_dir_name(state.epoch)
        self.dir.mkdir(parents=True, exist_ok=True)
        partial = self.dir / f"{name}{PARTIAL}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        model.save(partial / MODEL_FILE)
        if best_weights is not None:
            with (partial / BEST_WEIGHTS_FILE).open("wb") as fh:
                np.savez(fh, *best_weights)
        state.files = {p.name: file_digest(p) for p in sorted(partial.iterdir())}
        (partial / STATE_FILE).write_text(json.dumps(asdict(state), indent=1))
        final = self.dir / name
        if final.exists():  # trained again after this one was found damaged: set it aside
            final.rename(self.dir / f"{name}{REPLACED}")
        partial.rename(final)
        if self.remote:
            self._upload(final)
        self._prune(keep=KEEP)

    def _upload(self, folder: Path) -> None:
        from fauna.store import storage

        state = json.loads((folder / STATE_FILE).read_text())
        prefix = f"{self.remote}/{folder.name}"
        for name in state["files"]:
            storage.upload_file(folder / name, f"{prefix}/{name}")
        storage.upload_file(folder / STATE_FILE, f"{prefix}/{STATE_FILE}")  # the marker: last

    def _prune(self, keep: int) -> None:
        """Keep the newest `keep` complete checkpoints (older and partial ones go)."""
        for leftover in (*self.dir.glob(f"*{PARTIAL}"), *self.dir.glob(f"*{REPLACED}")):
            shutil.rmtree(leftover, ignore_errors=True)
        for name in newest_first(self._local_epochs())[keep:]:
            shutil.rmtree(self.dir / name, ignore_errors=True)
        if self.remote:
            self._prune_remote(keep)

    def _prune_remote(self, keep: int) -> None:
        from fauna.store import storage

        present = self._remote_files()
        complete = [name for name, files in present.items() if STATE_FILE in files]
        newest = newest_first(complete)[:keep]
        if not newest:
            return
        oldest_kept = int(EPOCH_DIR.match(newest[-1]).group(1))
        for name in newest_first(present):
            if int(EPOCH_DIR.match(name).group(1)) < oldest_kept:
                try:
                    storage.delete_prefix(f"{self.remote}/{name}")
                except storage.StorageError as exc:  # left for the next save to remove
                    log.warning(
                        "could not remove the old checkpoint %s/%s: %s", self.remote, name, exc
                    )

    def finish(self) -> None:
        """After success: the local checkpoints go; S3 keeps the newest (a retried task
        rebuilds the outputs from it instead of training again)."""
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.remote:
            self._prune_remote(keep=1)

    def discard(self) -> None:
        """After divergence every checkpoint goes: resuming would diverge again, and a rerun
        with a lower learning rate is another run (its fingerprint would refuse them)."""
        shutil.rmtree(self.dir, ignore_errors=True)
        if self.remote:
            from fauna.store import storage

            try:
                storage.delete_prefix(self.remote)
            except storage.StorageError as exc:
                log.warning("could not remove the checkpoints under %s: %s", self.remote, exc)

    # ----------------------------------------------------------------- loading

    def _local_epochs(self) -> set[str]:
        if not self.dir.is_dir():
            return set()
        return {p.name for p in self.dir.iterdir() if p.is_dir() and EPOCH_DIR.match(p.name)}

    def _remote_files(self) -> dict[str, set[str]]:
        """The file names under each epoch folder of the S3 prefix."""
        from fauna.store import storage

        base = storage.parse_s3_uri(self.remote).key.rstrip("/")
        found: dict[str, set[str]] = {}
        for key, _size in storage.list_keys(self.remote):
            parts = key[len(base) :].strip("/").split("/")
            if len(parts) == 2 and EPOCH_DIR.match(parts[0]):
                found.setdefault(parts[0], set()).add(parts[1])
        return found

    def latest(self) -> Checkpoint | None:
        """The newest usable checkpoint; None when there is none at all.

        A damaged one is skipped with a warning; when every one is damaged: TrainError.
        """
        local = self._local_epochs()
        remote = self._remote_files() if self.remote else {}
        remote = {name: files for name, files in remote.items() if STATE_FILE in files}
        problems: list[str] = []
        for name in newest_first(local | set(remote)):
            where = str(self.dir / name) if name in local else f"{self.remote}/{name}"
            try:
                folder = self.dir / name if name in local else self._download(name, remote[name])
                return self._load(folder, where)
            except DamagedCheckpoint as exc:
                log.warning("checkpoint %s is damaged (%s): trying the one before", where, exc)
                problems.append(f"{name}: {exc}")
                if name not in local:
                    shutil.rmtree(self.dir / name, ignore_errors=True)
        if problems:
            raise TrainError(
                f"no usable checkpoint in {self.remote or self.dir} ({'; '.join(problems)}): "
                "delete the checkpoints to start over"
            )
        return None

    def _download(self, name: str, present: set[str]) -> Path:
        from fauna.store import storage

        prefix = f"{self.remote}/{name}"
        partial = self.dir / f"{name}{PARTIAL}"
        shutil.rmtree(partial, ignore_errors=True)
        log.info("fetching the checkpoint %s", prefix)
        storage.download_file(f"{prefix}/{STATE_FILE}", partial / STATE_FILE)
        try:
            files = json.loads((partial / STATE_FILE).read_text())["files"]
        except (ValueError, KeyError, TypeError) as exc:
            shutil.rmtree(partial, ignore_errors=True)
            raise DamagedCheckpoint(f"{STATE_FILE} unreadable: {exc}") from None
        missing = sorted(set(files) - present)
        if missing:
            shutil.rmtree(partial, ignore_errors=True)
            raise DamagedCheckpoint(f"{', '.join(missing)} missing")
        for file_name in files:
            storage.download_file(f"{prefix}/{file_name}", partial / file_name)
        partial.rename(self.dir / name)
        return self.dir / name

    def _load(self, folder: Path, where: str) -> Checkpoint:
        state = self._read_state(folder)
        if state.fingerprint != self.fingerprint:
            raise TrainError(
                f"{where} is a checkpoint of a different training run (other backbone, "
                "settings or data): delete it, or give another checkpoint folder/URI"
            )
        if folder.name != epoch_dir_name(state.epoch):
            raise DamagedCheckpoint(f"its {STATE_FILE} is for epoch {state.epoch + 1}")
        for file_name, expected in state.files.items():
            path = folder / file_name
            found = file_digest(path) if path.is_file() else None
            if found is None:
                raise DamagedCheckpoint(f"{file_name}: missing")
            if found != expected:
                raise DamagedCheckpoint(
                    f"{file_name}: {found['size']} bytes with another sha256 than the "
                    f"{expected['size']} bytes {STATE_FILE} records"
                )
        return Checkpoint(state, self._load_model(folder), self._load_best(folder), where)

    @staticmethod
    def _read_state(folder: Path) -> TrainingState:
        try:
            return TrainingState.from_dict(json.loads((folder / STATE_FILE).read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DamagedCheckpoint(f"{STATE_FILE} unreadable: {str(exc)[:120]}") from None

    @staticmethod
    def _load_model(folder: Path) -> Any:
        from fauna.model.artifact import ModelArtifactError, load_model_file

        try:
            return load_model_file(folder / MODEL_FILE, compile=True)
        except ModelArtifactError as exc:
            raise DamagedCheckpoint(str(exc)) from None

    @staticmethod
    def _load_best(folder: Path) -> list | None:
        import numpy as np

        path = folder / BEST_WEIGHTS_FILE
        if not path.is_file():
            return None
        with np.load(path) as npz:
            return [npz[f"arr_{i}"] for i in range(len(npz.files))]
