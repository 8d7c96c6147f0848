"""ingest's duplicate detection, split's assignment and the quarantine hold nothing per
image in Python.

Both keep their per-image rows in a scratch SQLite file (`fauna.data.scratch`) and let it
sort; these tests run them over 50,000 generated rows under tracemalloc, which counts
every Python allocation (not SQLite's own page cache, bounded by `scratch.CACHE_KIB`).
One Python object per image (a dict entry of a 64-character sha256, a tuple, a list
item) is at least ~100 bytes, i.e. ~5 MB for 50,000: the bound below (3 MiB) fails such
a regression and leaves room for the batches and one duplicate group. No timing.
"""

import hashlib
import json
import tracemalloc
from pathlib import Path

from fauna.config import SplitConfig
from fauna.data.dataset import Quarantine, write_json
from fauna.data.filetable import FileTable
from fauna.data.scratch import blob, connect
from fauna.steps.split import _SCHEMA, assign_splits

N = 50_000
BOUND = 3 << 20
LABELS = [f"class{i:02d}" for i in range(10)]


def _digest(i: int) -> str:
    """Every 10th file repeats the content of the one before (a duplicate group of two)."""
    return hashlib.sha256(str(i - (i % 10 == 9)).encode()).hexdigest()


def _peak(run) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        run()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def test_duplicate_detection_over_50k_files_holds_one_group_at_a_time(tmp_path: Path):
    found = {}

    def run() -> None:
        with FileTable(tmp_path / "files.sqlite") as table:
            for i in range(N):
                label = LABELS[i % 10 if i % 10 != 9 else 8]  # a duplicate keeps its label
                table.add(
                    f"{label}/{i:06d}.jpg", f"/data/{label}/{i:06d}.jpg", f"{i:06d}.jpg", label
                )
            for batch in table.paths():
                table.record((i, True, _digest(i - 1), 4, 3, "JPEG", "", "") for i, _ in batch)
            groups = 0
            for group in table.by_content():
                groups += 1
                table.keep([group[0][0]])
            found["groups"] = groups
            found["kept"] = sum(table.kept_sizes().values())

    peak = _peak(run)
    assert found == {"groups": N - N // 10, "kept": N - N // 10}  # every 10th was a copy
    assert peak < BOUND, f"{peak / 2**20:.1f} MiB of Python objects for {N} files"


def test_split_assignment_over_50k_images_holds_no_row_objects(tmp_path: Path):
    db = connect(tmp_path / "rows.sqlite", _SCHEMA)
    sql = "INSERT INTO rows (id, label, sha256) VALUES (?, ?, ?)"
    db.executemany(
        sql, ((blob(f"{i:06d}.jpg"), blob(LABELS[i % 10]), blob(_digest(i))) for i in range(N))
    )
    result = {}

    def run() -> None:
        result["counts"], result["notes"] = assign_splits(db, LABELS, SplitConfig(seed=1))

    peak = _peak(run)
    db.close()
    assert sum(result["counts"].values()) == N and not result["notes"]
    assert peak < BOUND, f"{peak / 2**20:.1f} MiB of Python objects for {N} images"


def test_quarantine_of_50k_rejected_files_holds_no_item_objects(tmp_path: Path):
    """A source of unreadable files (the 100,000-tiny-file probe) costs disk, not memory;
    quarantine.json is still the whole document, byte for byte what `write_json` wrote."""
    quarantine = Quarantine("ingest", total_in=N)
    detail = "image too small: 1x1 px (needs at least 32 px on each side)"

    def run() -> None:
        for i in range(N):
            reason = "too_small" if i % 3 else "unreadable"
            quarantine.reject(f"class{i % 10:02d}/{i:06d}.jpg", reason, detail)

    peak = _peak(run)
    assert peak < BOUND, f"{peak / 2**20:.1f} MiB of Python allocations for {N} rejected files"
    quarantine.write(tmp_path)
    written = json.loads((tmp_path / "quarantine.json").read_text())
    assert written["quarantined"] == len(written["items"]) == N and written["reconciles"]
    assert written["reasons"] == {"too_small": N - N // 3 - 1, "unreadable": N // 3 + 1}
    assert written["items"][1] == {
        "item": "class01/000001.jpg",
        "reason": "too_small",
        "detail": detail,
    }
    write_json(tmp_path / "whole.json", written)
    assert (tmp_path / "quarantine.json").read_bytes() == (tmp_path / "whole.json").read_bytes()


def test_an_empty_quarantine_is_written_as_before(tmp_path: Path):
    Quarantine("preprocess", total_in=2, kept=2).write(tmp_path)
    written = json.loads((tmp_path / "quarantine.json").read_text())
    assert written["items"] == [] and written["reasons"] == {} and written["reconciles"]
    write_json(tmp_path / "whole.json", written)
    assert (tmp_path / "quarantine.json").read_bytes() == (tmp_path / "whole.json").read_bytes()
