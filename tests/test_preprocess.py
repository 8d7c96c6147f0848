"""preprocess: every kind of input image becomes an upright NxN RGB record, nothing is lost.

The input is an ingest-like directory built here (not by the ingest step), so
these tests depend only on the layout in `fauna.data.dataset`.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageOps
from stepkill import kill_at_random, partial_folders, tree_bytes

from fauna import cli
from fauna.config import Config, PreprocessConfig
from fauna.data.dataset import (
    CLASSES,
    MANIFEST,
    PREPROCESS_INFO,
    DatasetError,
    read_json,
    read_manifest,
    write_json,
    write_manifest,
)
from fauna.data.records import deserialize, iter_records, shard_paths
from fauna.step_output import MARKER, OutputError, mark_complete, read_marker, step_output
from fauna.steps.preprocess import preprocess_dataset

SIZE = 32
RED, BLUE, GREEN, YELLOW, CYAN = (255, 0, 0), (0, 0, 255), (0, 255, 0), (255, 255, 0), (0, 255, 255)
CLASSES_LIST = ["cat", "dog"]
RAW_FIELDS = ["path", "label", "sha256", "width", "height", "format"]

Writer = Callable[[Path], None]


# ---------------------------------------------------------------- input images


def halves(size: tuple[int, int], left: tuple, right: tuple, mode: str = "RGB") -> Image.Image:
    img = Image.new(mode, size, left)
    img.paste(Image.new(mode, (size[0] - size[0] // 2, size[1]), right), (size[0] // 2, 0))
    return img


def photo(size: tuple[int, int], seed: int) -> Image.Image:
    """Smooth gradients plus noise: compresses and resizes like a photo."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8))
    smooth = np.asarray(coarse.resize(size, Image.Resampling.BICUBIC), dtype=np.int16)
    noisy = smooth + rng.normal(0, 6, smooth.shape).astype(np.int16)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def save(img: Image.Image, **kwargs) -> Writer:
    return lambda path: img.save(path, **kwargs)


def exif_rotated(orientation: int) -> Writer:
    """Stored 160x120 with a red left half and a blue right half, plus an EXIF orientation."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return save(halves((160, 120), RED, BLUE), exif=exif, quality=95)


def bordered() -> Image.Image:
    """4:3 with 20 px green side borders; the centre square is yellow | cyan."""
    img = Image.new("RGB", (160, 120), GREEN)
    img.paste(halves((120, 120), YELLOW, CYAN), (20, 0))
    return img


def rgba_half_transparent() -> Image.Image:
    return halves((80, 80), (255, 0, 0, 255), (0, 0, 0, 0), "RGBA")  # right: transparent black


def gray16() -> Image.Image:
    """16-bit: left half full scale, right half 128 * 257 (mid grey if scaled, white if clipped)."""
    pixels = np.full((64, 64), 65535, dtype=np.uint16)
    pixels[:, 32:] = 128 * 257
    return Image.fromarray(pixels)


def palette_with_transparency() -> Writer:
    img = Image.new("P", (64, 64), 0)
    img.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    img.paste(1, (0, 0, 32, 64))  # left half blue, right half palette index 0 = transparent
    return save(img, transparency=0)


def truncated_jpeg(path: Path) -> None:
    buffer = io.BytesIO()
    photo((200, 150), 7).save(buffer, "JPEG", quality=90)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 3])


INPUTS: dict[str, tuple[str, Writer]] = {
    "images/cat/photo.jpg": ("cat", save(photo((320, 240), 1), quality=90)),
    "images/cat/big.jpg": ("cat", save(photo((960, 640), 2), quality=90)),
    "images/cat/alpha.png": ("cat", save(rgba_half_transparent())),
    "images/cat/gray.jpg": ("cat", save(photo((100, 80), 3).convert("L"), quality=95)),
    "images/cat/la.png": ("cat", save(photo((60, 60), 4).convert("LA"))),
    "images/cat/cmyk.jpg": ("cat", save(Image.new("CMYK", (90, 70), (0, 255, 255, 0)))),
    "images/dog/gray16.png": ("dog", save(gray16())),
    "images/dog/palette.png": ("dog", save(halves((64, 64), RED, BLUE).convert("P"))),
    "images/dog/palette_alpha.png": ("dog", palette_with_transparency()),
    "images/dog/exif6.jpg": ("dog", exif_rotated(6)),
    "images/dog/exif8.jpg": ("dog", exif_rotated(8)),
    "images/dog/bordered.png": ("dog", save(bordered())),
    "images/dog/truncated.jpg": ("dog", truncated_jpeg),
    "images/dog/text.jpg": ("dog", lambda p: p.write_text("not an image\n")),
}
# Rows whose problem is the manifest itself: no file, or a label not in classes.json.
MISSING = "images/dog/gone.jpg"
UNKNOWN_LABEL = "images/cat/zebra.jpg"
BAD = {"images/dog/truncated.jpg", "images/dog/text.jpg", MISSING, UNKNOWN_LABEL}


def make_raw(
    root: Path, inputs: dict[str, tuple[str, Writer]] = INPUTS, max_pixels: int | None = None
) -> Path:
    """An ingest-like directory: images/<label>/<file>, manifest.csv, classes.json, source.json,
    and the completion marker an ingest run writes last."""
    rows = []
    for rel, (label, write) in inputs.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
        try:
            with Image.open(path) as img:
                width, height, fmt = img.width, img.height, img.format
        except Exception:  # noqa: BLE001 - ingest would have quarantined it; we test preprocess
            width, height, fmt = 0, 0, "?"
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        rows.append(dict(zip(RAW_FIELDS, (rel, label, sha, width, height, fmt), strict=True)))
    if inputs is INPUTS:
        rows.insert(3, {**rows[0], "path": MISSING, "label": "dog"})
        save(photo((50, 50), 9))(root / UNKNOWN_LABEL)
        rows.append({**rows[0], "path": UNKNOWN_LABEL, "label": "zebra"})
    write_manifest(root / MANIFEST, rows, RAW_FIELDS)
    write_json(root / CLASSES, CLASSES_LIST)
    source = {"source": "generated", "name": "test", "synthetic": True, "version": "v1"}
    write_json(
        root / "source.json", source | ({"max_image_pixels": max_pixels} if max_pixels else {})
    )
    mark_complete(root, "ingest")
    return root


def config(**kwargs) -> PreprocessConfig:
    return Config.from_dict({"preprocess": {"image_size": SIZE, **kwargs}}).preprocess


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_raw(tmp_path_factory.mktemp("raw"))


@pytest.fixture(scope="module")
def crop_out(raw: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pre")
    preprocess_dataset(raw, out, config(images_per_shard=3, workers=2))
    return out


def decoded(out: Path) -> dict[str, np.ndarray]:
    return {
        r.id: np.asarray(Image.open(io.BytesIO(r.encoded))) for r in iter_records(out / "shards")
    }


def mean_colour(pixels: np.ndarray) -> np.ndarray:
    return pixels.reshape(-1, 3).mean(axis=0)


def close(pixels: np.ndarray, colour: tuple, tolerance: float = 24) -> bool:
    return bool(np.abs(mean_colour(pixels) - np.array(colour)).max() <= tolerance)


# ---------------------------------------------------------------- tests


def test_every_mode_becomes_rgb_of_the_requested_size(crop_out: Path) -> None:
    images = decoded(crop_out)
    assert set(images) == set(INPUTS) - BAD
    for name, pixels in images.items():
        assert pixels.shape == (SIZE, SIZE, 3), name
    assert close(images["images/cat/cmyk.jpg"], RED)
    gray = images["images/cat/gray.jpg"].astype(int)
    assert np.abs(gray[..., 0] - gray[..., 2]).max() <= 4  # R = G = B, up to JPEG noise
    # The palette image keeps its colours: red left, blue right.
    palette = images["images/dog/palette.png"]
    assert close(palette[:, : SIZE // 2 - 3], RED) and close(palette[:, SIZE // 2 + 3 :], BLUE)


def test_transparency_is_composited_on_white(crop_out: Path) -> None:
    images = decoded(crop_out)
    alpha = images["images/cat/alpha.png"]
    assert close(alpha[:, : SIZE // 2 - 3], RED)
    assert close(alpha[:, SIZE // 2 + 3 :], (255, 255, 255))  # not the hidden black
    palette = images["images/dog/palette_alpha.png"]
    assert close(palette[:, : SIZE // 2 - 3], BLUE)
    assert close(palette[:, SIZE // 2 + 3 :], (255, 255, 255))


def test_16_bit_is_scaled_not_clipped(crop_out: Path) -> None:
    pixels = decoded(crop_out)["images/dog/gray16.png"]
    assert close(pixels[:, : SIZE // 2 - 3], (255, 255, 255), 3)
    assert close(pixels[:, SIZE // 2 + 3 :], (128, 128, 128), 3)


@pytest.mark.parametrize(("orientation", "top", "bottom"), [(6, RED, BLUE), (8, BLUE, RED)])
def test_exif_orientation_is_applied(
    crop_out: Path, raw: Path, orientation: int, top: tuple, bottom: tuple
) -> None:
    name = f"images/dog/exif{orientation}.jpg"
    pixels = decoded(crop_out)[name]
    assert close(pixels[: SIZE // 2 - 3], top) and close(pixels[SIZE // 2 + 3 :], bottom)
    # Pillow's own reading of the orientation agrees.
    upright = np.asarray(ImageOps.exif_transpose(Image.open(raw / name)))
    assert close(upright[:10], top) and close(upright[-10:], bottom)


def test_crop_keeps_the_centre_and_stretch_keeps_everything(
    crop_out: Path, raw: Path, tmp_path: Path
) -> None:
    def green(pixels: np.ndarray) -> int:
        p = pixels.astype(int)
        return int(((p[..., 1] > 180) & (p[..., 0] < 90) & (p[..., 2] < 90)).sum())

    cropped = decoded(crop_out)["images/dog/bordered.png"]
    assert green(cropped) == 0
    assert close(cropped[:, : SIZE // 2 - 3], YELLOW) and close(cropped[:, SIZE // 2 + 3 :], CYAN)

    only = make_raw(tmp_path / "raw", {"images/dog/bordered.png": ("dog", save(bordered()))})
    preprocess_dataset(only, tmp_path / "stretch", config(mode="stretch", workers=1))
    stretched = decoded(tmp_path / "stretch")["images/dog/bordered.png"]
    assert stretched.shape == (SIZE, SIZE, 3)
    assert green(stretched[:, :2]) == 2 * SIZE and green(stretched[:, -2:]) == 2 * SIZE
    assert read_json(tmp_path / "stretch" / PREPROCESS_INFO)["mode"] == "stretch"


def test_fast_path_matches_a_plain_resize_and_crop(crop_out: Path, raw: Path) -> None:
    """The reduced-scale JPEG decode barely changes the result (960x640 decoded at 1/8)."""
    with Image.open(raw / "images/cat/big.jpg") as img:
        img = img.convert("RGB")
        scale = SIZE / min(img.size)
        small = img.resize((round(img.width * scale), SIZE), Image.Resampling.LANCZOS)
        left = (small.width - SIZE) // 2
        plain = np.asarray(small.crop((left, 0, left + SIZE, SIZE)), dtype=float)
    fast = decoded(crop_out)["images/cat/big.jpg"].astype(float)
    assert np.abs(fast - plain).mean() < 3


def test_shards_roll_over_and_manifest_matches_records(crop_out: Path, raw: Path) -> None:
    rows = list(read_manifest(crop_out / MANIFEST))
    kept = len(INPUTS) - len(BAD & set(INPUTS))
    assert len(rows) == kept
    shards = shard_paths(crop_out / "shards")
    assert len(shards) == -(-kept // 3)
    import tensorflow as tf

    in_shard = [
        (path.name, deserialize(data))
        for path in shards
        for data in tf.data.TFRecordDataset([str(path)]).as_numpy_iterator()
    ]
    per_shard = [sum(name == path.name for name, _ in in_shard) for path in shards]
    assert per_shard[:-1] == [3] * (len(shards) - 1) and 1 <= per_shard[-1] <= 3
    raw_sha = {r["path"]: r["sha256"] for r in read_manifest(raw / MANIFEST)}
    for row, (shard, rec) in zip(rows, in_shard, strict=True):
        assert [row["id"], row["label"], row["sha256"], row["shard"]] == [
            *(rec.id, rec.label, rec.sha256, shard)
        ]
        assert int(row["label_index"]) == rec.label_index == CLASSES_LIST.index(rec.label)
        assert rec.sha256 == raw_sha[rec.id]
    info = read_json(crop_out / PREPROCESS_INFO)
    assert info["count"] == kept and info["image_size"] == SIZE and info["mode"] == "crop"
    assert read_json(crop_out / CLASSES) == CLASSES_LIST
    # Carried as ingest wrote it, with its version (none there: version 1).
    assert read_json(crop_out / "source.json") == {
        "schema_version": 1,
        **read_json(raw / "source.json"),
    }


def test_bad_rows_are_quarantined_and_counts_reconcile(crop_out: Path) -> None:
    report = read_json(crop_out / "quarantine.json")
    reasons = {item["item"]: item["reason"] for item in report["items"]}
    assert reasons == {
        "images/dog/truncated.jpg": "undecodable",
        "images/dog/text.jpg": "undecodable",
        MISSING: "missing file",
        UNKNOWN_LABEL: "unknown label",
    }
    assert report["total_in"] == report["kept"] + report["quarantined"] == len(INPUTS) + 2
    assert report["reconciles"] is True
    assert "quarantined" in (crop_out / "report.txt").read_text()


def test_one_and_two_workers_write_identical_records(crop_out: Path, raw: Path, tmp_path):
    preprocess_dataset(raw, tmp_path, config(images_per_shard=3, workers=1))
    assert list(iter_records(tmp_path / "shards")) == list(iter_records(crop_out / "shards"))
    assert (tmp_path / MANIFEST).read_text() == (crop_out / MANIFEST).read_text()


def test_workers_do_not_need_tensorflow() -> None:
    code = "import sys, fauna.steps.preprocess; sys.exit('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_empty_manifest_is_a_clear_error(tmp_path: Path) -> None:
    empty = make_raw(tmp_path / "raw", {})
    with pytest.raises(DatasetError, match="no images"):
        preprocess_dataset(empty, tmp_path / "out", config())


def test_cli_overrides_and_one_line_errors(raw: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    argv = ["preprocess", "--raw", str(raw), "--out", str(out), "--workers", "1"]
    assert cli.main([*argv, "--image-size", "24", "--mode", "stretch"]) == 0
    assert read_json(out / PREPROCESS_INFO) | {"count": 0} == {
        "schema_version": 1,
        "image_size": 24,
        "mode": "stretch",
        "filter": "lanczos",
        "jpeg_quality": PreprocessConfig().jpeg_quality,
        "images_per_shard": PreprocessConfig().images_per_shard,
        "count": 0,
    }
    err = capsys.readouterr().err  # the summary once: counts, reasons, size, mode, shards
    assert err.count(" kept + 4 quarantined; ") == err.count(": 24px stretch JPEGs in 1 ") == 1
    assert cli.main(["preprocess", "--raw", str(tmp_path / "nope"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fauna preprocess: error:") and "\n" not in err


def test_component_wraps_the_step(raw: Path, tmp_path: Path) -> None:
    from fauna.components.preprocess import preprocess

    out = SimpleNamespace(path=str(tmp_path / "artifact"), metadata={})
    section = Config.from_dict({"preprocess": {"workers": 1}}).to_dict()["preprocess"]
    preprocess.python_func(SIZE, section, SimpleNamespace(path=str(raw)), out)
    assert out.metadata["images"] == len(list(iter_records(Path(out.path) / "shards")))
    assert out.metadata["quarantined"] == len(BAD)


def test_pool_reads_the_manifest_only_a_window_ahead(tmp_path: Path, monkeypatch) -> None:
    """Pool.imap alone would read every row up front; memory must not grow with the dataset."""
    import time

    from fauna.steps import preprocess as step

    save(photo((40, 30), 5))(tmp_path / "one.jpg")
    row = {"path": "one.jpg", "label": "cat", "sha256": "x", "width": 40, "height": 30}
    write_manifest(tmp_path / MANIFEST, [row | {"format": "JPEG"}] * 500, RAW_FIELDS)
    read = []
    real_rows = step._rows

    def counted(manifest: Path):
        for item in real_rows(manifest):
            read.append(1)
            yield item

    monkeypatch.setattr(step, "_rows", counted)
    job = step._Job(str(tmp_path), SIZE, "crop", 90)
    outcomes = step._outcomes(tmp_path / MANIFEST, job, workers=2)
    first = next(outcomes)
    time.sleep(1.0)  # ample time for an unbounded feeder to read all 500 rows
    window = step.CHUNKSIZE * step.CHUNKS_IN_FLIGHT_PER_WORKER * 2
    # The window, plus the slot freed by the one outcome taken, plus one row read and waiting.
    assert first[1] is not None and len(read) <= window + 2
    assert sum(1 for _ in outcomes) == 499 and len(read) == 500


# ---------------------------------------------------------------- whole outputs only


def test_bomb_is_measured_against_the_configured_limit(tmp_path: Path) -> None:
    """The limit ingest checked with (source.json) is the one preprocess applies and quotes."""
    inputs = {
        "images/cat/small.png": ("cat", save(photo((60, 40), 1))),
        "images/dog/wide.png": ("dog", save(photo((200, 100), 2))),
        "images/dog/huge.png": ("dog", save(photo((400, 300), 3))),
    }
    raw = make_raw(tmp_path / "raw", inputs, max_pixels=10_000)
    preprocess_dataset(raw, tmp_path / "out", config(workers=1))
    items = {i["item"]: i for i in read_json(tmp_path / "out" / "quarantine.json")["items"]}
    assert set(items) == {"images/dog/wide.png", "images/dog/huge.png"}
    for item in items.values():
        assert item["reason"] == "decompression bomb"
        assert "> data.max_image_pixels=10000" in item["detail"]
        assert "178956970" not in item["detail"] and "89478485" not in item["detail"]


def test_input_must_be_a_completed_ingest_output(raw: Path, tmp_path: Path, capsys) -> None:
    half = tmp_path / "half"
    make_raw(half, {"images/cat/a.png": ("cat", save(photo((40, 30), 1)))})
    (half / MARKER).unlink()  # as an interrupted ingest would leave it
    with pytest.raises(OutputError, match="not a completed step output.*`fauna ingest`"):
        preprocess_dataset(half, tmp_path / "out", config())
    assert not (tmp_path / "out").exists()

    mark_complete(half, "split")
    argv = ["preprocess", "--raw", str(half), "--out", str(tmp_path / "out")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "is the output of `fauna split`, but this step reads the output of `fauna ingest`" in err


def test_a_users_folder_is_refused_and_left_untouched(raw: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="not empty and is not a fauna output"):
        preprocess_dataset(raw, mine, config())
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    assert (mine / "notes.txt").read_text() == "keep me"
    assert partial_folders(mine) == []


def test_a_second_writer_is_refused_while_the_first_runs(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with step_output(out, "preprocess") as first:  # the first writer, mid-run
        (first / "manifest.csv").write_text("id\n")
        with pytest.raises(OutputError, match="another process is writing"):
            preprocess_dataset(raw, out, config(workers=1))
    # The first writer's output is the one in place, untouched by the refused second.
    assert read_marker(out)["step"] == "preprocess"
    assert (out / "manifest.csv").read_text() == "id\n"


def test_a_rerun_replaces_its_own_output_whole(crop_out: Path, raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    preprocess_dataset(raw, out, config(image_size=24, images_per_shard=2, workers=1))
    preprocess_dataset(raw, out, config(images_per_shard=3, workers=1))
    assert tree_bytes(out) == tree_bytes(crop_out)  # nothing of the first run is left


def test_killed_at_a_random_moment_then_rerun_gives_the_same_bytes(
    crop_out: Path, raw: Path, tmp_path: Path
) -> None:
    import time

    from fauna.steps.split import split_dataset

    started = time.monotonic()
    preprocess_dataset(raw, tmp_path / "reference", config(images_per_shard=3, workers=1))
    window = time.monotonic() - started
    out = tmp_path / "out"
    argv = ["preprocess", "--raw", str(raw), "--out", str(out), "--workers", "1"]
    argv += ["--image-size", str(SIZE), "--set", "preprocess.images_per_shard=3"]
    seed = int.from_bytes(os.urandom(4), "little")
    outcome = kill_at_random(argv, out, 1.5 * window, seed)
    print(f"kill test (seed {seed}): {outcome}")
    if outcome["killed"]:
        # Nothing half-written is visible, and the half-written folder is refused downstream.
        assert not out.exists() or read_marker(out) is not None
        for partial in outcome["partial"]:
            with pytest.raises(OutputError, match="not a completed step output"):
                split_dataset(partial, tmp_path / "split", Config().split)
    preprocess_dataset(raw, out, config(images_per_shard=3, workers=1))
    assert partial_folders(out) == []
    assert tree_bytes(out) == tree_bytes(tmp_path / "reference")
