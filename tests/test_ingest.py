"""ingest on real generated files, through every kind of source, with every kind of bad input."""

from __future__ import annotations

import csv
import functools
import hashlib
import http.server
import io
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import tarfile
import threading
import time
import urllib.parse
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from stepkill import kill_at_random, partial_folders, tree_bytes

from fauna.cli import main
from fauna.config import DataConfig
from fauna.data.dataset import DatasetError, read_json, read_manifest
from fauna.data.synthetic import SYNTHETIC_MARKER
from fauna.errors import FaunaError
from fauna.sources import dataset_name, redact
from fauna.step_output import OutputError, read_marker, step_output
from fauna.steps.ingest import IngestResult, ingest_dataset
from fauna.store import champion, storage
from fauna.store.champion import DatasetId

# Test images are at most 64x48 = 3072 pixels; anything above this is a "bomb".
MAX_PIXELS = 10_000


def cfg(**kw) -> DataConfig:
    return DataConfig(**{"max_image_pixels": MAX_PIXELS, **kw})


_rng = np.random.default_rng(7)


def noise(size=(64, 48), mode="RGB") -> Image.Image:
    """A unique image (random pixels), so no two generated files share a hash by accident."""
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = _rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    return Image.fromarray(arr.squeeze() if channels == 1 else arr, mode)


def save(img: Image.Image, path: Path, fmt: str = "JPEG", **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, fmt, **kw)
    return path


def jpeg(path: Path, size=(64, 48)) -> Path:
    return save(noise(size), path)


def jpeg_bytes(size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    noise(size).save(buf, "JPEG")
    return buf.getvalue()


def png_bomb(path: Path) -> Path:
    """A PNG whose header claims 100000x100000 pixels: Pillow's own bomb check fires on open."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def check_reconciles(out: Path, result: IngestResult) -> dict:
    """Counts reconcile in the result, quarantine.json, manifest.csv and report.txt."""
    report = read_json(out / "quarantine.json")
    assert report["reconciles"] is True
    assert report["total_in"] == report["kept"] + report["quarantined"] == result.total_in
    assert report["kept"] == result.kept == len(list(read_manifest(out / "manifest.csv")))
    assert report["quarantined"] == result.quarantined == len(report["items"])
    text = (out / "report.txt").read_text()
    assert f"{result.total_in} in = {result.kept} kept + {result.quarantined} quarantined" in text
    assert "counts reconcile: yes" in text
    return report


def reasons_by_item(report: dict) -> dict[str, str]:
    return {i["item"]: i["reason"] for i in report["items"]}


def check_manifest(out: Path) -> list[dict[str, str]]:
    """Every manifest row names a kept file whose bytes hash to its sha256; classes agree."""
    rows = list(read_manifest(out / "manifest.csv"))
    for row in rows:
        data = (out / row["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["sha256"]
        assert row["path"].startswith(f"images/{row['label']}/")
    files = sorted(
        p.relative_to(out).as_posix() for p in (out / "images").rglob("*") if p.is_file()
    )
    assert files == sorted(r["path"] for r in rows)
    assert read_json(out / "classes.json") == sorted({r["label"] for r in rows})
    return rows


# -- the folder-per-class layout with every kind of bad file -----------------------------------


@pytest.fixture
def zoo(tmp_path: Path) -> Path:
    """cat/ and dog/ with good images of every kind, plus one of each kind of bad input."""
    root = tmp_path / "zoo"
    originals = {}
    for i in range(3):
        originals[f"cat/c{i}.jpg"] = jpeg(root / "cat" / f"c{i}.jpg")
        originals[f"dog/d{i}.jpg"] = jpeg(root / "dog" / f"d{i}.jpg")
    save(noise(mode="RGBA"), root / "cat" / "alpha.png", "PNG")
    save(noise(mode="L"), root / "cat" / "gray.jpg")
    save(noise().convert("CMYK"), root / "dog" / "cmyk.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: displayed as 40 wide, 60 high
    save(noise((60, 40)), root / "dog" / "rotated.jpg", exif=exif.tobytes())
    save(noise(), root / "cat" / "sub" / "nested.jpg")  # nested inside a class: still cat
    data = jpeg_bytes()
    (root / "cat" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "cat" / "empty.jpg").write_bytes(b"")
    (root / "cat" / "text.jpg").write_text("this is not an image\n")
    (root / "cat" / "notes.txt").write_text("field notes\n")
    jpeg(root / "dog" / "huge.jpg", size=(200, 100))  # 20000 px > MAX_PIXELS
    png_bomb(root / "dog" / "bomb.png")
    (root / "dog" / "z_copy.jpg").write_bytes((root / "dog" / "d0.jpg").read_bytes())
    (root / "dog" / "from_cat.jpg").write_bytes((root / "cat" / "c1.jpg").read_bytes())
    jpeg(root / "owl" / "lonely.jpg")  # a class with 1 image < min_images_per_class
    jpeg(root / "loose.jpg")  # not in any class folder
    (root / ".DS_Store").write_bytes(b"\0\1")  # hidden: ignored
    return root


def test_folders_layout_keeps_good_images_and_quarantines_the_rest(zoo: Path, tmp_path: Path):
    out = tmp_path / "raw"
    result = ingest_dataset(str(zoo), out, cfg(min_images_per_class=2))

    report = check_reconciles(out, result)
    assert reasons_by_item(report) == {
        "loose.jpg": "no class folder",
        "cat/notes.txt": "unsupported file type",
        "cat/truncated.jpg": "truncated image",
        "cat/empty.jpg": "zero-byte file",
        "cat/text.jpg": "not an image",
        "dog/huge.jpg": "decompression bomb",
        "dog/bomb.png": "decompression bomb",
        "dog/z_copy.jpg": "duplicate",
        "cat/c1.jpg": "conflicting labels",
        "dog/from_cat.jpg": "conflicting labels",
        "owl/lonely.jpg": "class too small",
    }
    rows = {r["path"]: r for r in check_manifest(out)}
    assert sorted(rows) == sorted(
        [f"images/cat/{n}" for n in ("c0.jpg", "c2.jpg", "alpha.png", "gray.jpg", "sub/nested.jpg")]
        + [f"images/dog/{n}" for n in ("d0.jpg", "d1.jpg", "d2.jpg", "cmyk.jpg", "rotated.jpg")]
    )
    assert rows["images/cat/alpha.png"]["format"] == "PNG"
    assert rows["images/dog/cmyk.jpg"]["format"] == "JPEG"
    assert (rows["images/dog/rotated.jpg"]["width"], rows["images/dog/rotated.jpg"]["height"]) == (
        "40",
        "60",
    )
    assert (out / "images/dog/d0.jpg").read_bytes() == (zoo / "dog/d0.jpg").read_bytes()
    assert result.classes == ["cat", "dog"] and result.per_class == {"cat": 5, "dog": 5}
    info = read_json(out / "source.json")
    assert info == {
        "schema_version": 1,
        "source": str(zoo),
        "name": "zoo",  # data.name is empty: named after the folder
        "synthetic": False,
        "version": result.version,
        "content": info["content"],  # the images' fingerprint: see test_dataset_key_*
        "max_image_pixels": MAX_PIXELS,
    }
    # The bomb messages quote the configured limit and the key that raises it, not Pillow's.
    details = {i["item"]: i["detail"] for i in report["items"]}
    assert "20000 pixels > data.max_image_pixels=10000 (raise" in details["dog/huge.jpg"]
    assert f"> data.max_image_pixels={MAX_PIXELS}" in details["dog/bomb.png"]
    assert "178956970" not in details["dog/bomb.png"]
    assert (zoo / "cat" / "c0.jpg").is_file()  # a local folder is copied, never moved


def test_version_is_a_content_hash(zoo: Path, tmp_path: Path):
    first = ingest_dataset(str(zoo), tmp_path / "a", cfg())
    again = ingest_dataset(str(zoo), tmp_path / "a", cfg())  # an earlier output is replaced
    assert again.version == first.version
    jpeg(zoo / "dog" / "new.jpg")
    assert ingest_dataset(str(zoo), tmp_path / "b", cfg()).version != first.version


# -- CSV layouts, archives ---------------------------------------------------------------------


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def kaggle_copy(root: Path) -> Path:
    """The Kaggle layout: train.csv (Image_id,Animal) beside train/; `+` in class names."""
    for i in range(3):
        jpeg(root / "train" / f"Img-{i}.jpg")
        jpeg(root / "train" / f"Img-{10 + i}.jpg")
    jpeg(root / "train" / "Img-99.jpg")  # on disk, not in the CSV
    jpeg(root / "test" / "Img-500.jpg")  # the unlabelled test folder is not the training data
    jpeg(root / "train" / "Img-20.jpg")
    jpeg(root / "train" / "Img-21.jpg")
    rows = [[f"Img-{i}.jpg", "german+shepherd"] for i in range(3)]
    rows += [[f"Img-{10 + i}", "killer+whale"] for i in range(3)]  # no extension in the CSV
    rows += [["Img-404.jpg", "bat"], ["Img-20.jpg", ""], ["Img-21.jpg", "unicorn"]]
    write_csv(root / "train.csv", ["Image_id", "Animal"], rows)
    (root / SYNTHETIC_MARKER).write_text("generated\n")
    return root


def test_kaggle_csv_layout_from_a_zip(tmp_path: Path):
    data = kaggle_copy(tmp_path / "animals")
    archive = tmp_path / "animals.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(data.rglob("*")):
            zf.write(path, Path("animals-30") / path.relative_to(data))  # a wrapper folder
    out = tmp_path / "raw"
    classes = ["bat", "german+shepherd", "killer+whale"]
    result = ingest_dataset(str(archive), out, cfg(classes=classes))

    report = check_reconciles(out, result)
    assert sorted(Counter(reasons_by_item(report).values()).items()) == [
        ("empty label", 1),
        ("missing file", 1),
        ("not in CSV", 1),
        ("unknown label", 1),
    ]
    assert reasons_by_item(report)["train/Img-99.jpg"] == "not in CSV"
    assert reasons_by_item(report)["train/Img-21.jpg"] == "unknown label"
    assert check_manifest(out)
    assert result.per_class == {"german+shepherd": 3, "killer+whale": 3}
    assert result.synthetic is True and read_json(out / "source.json")["synthetic"] is True
    assert "bat" in (out / "report.txt").read_text()  # a class of data.classes with no image


def test_generic_csv_layout_from_a_tar_gz(tmp_path: Path):
    data = tmp_path / "photos"
    for i in range(2):
        jpeg(data / "imgs" / "a" / f"{i}.jpg")
        jpeg(data / "imgs" / "b" / f"{i}.png")
    (data / "imgs" / "b" / "again.png").write_bytes((data / "imgs" / "b" / "0.png").read_bytes())
    rows = [[f"imgs/a/{i}.jpg", "fox"] for i in range(2)]
    rows += [[f"imgs/b/{i}.png", "hare"] for i in range(2)]
    jpeg(data / "imgs" / "c.jpg")
    jpeg(data / "imgs" / "d.jpg")
    rows += [["imgs/b/again.png", "hare"], ["imgs/missing.jpg", "fox"], ["imgs/a/0.jpg", " "]]
    rows += [["imgs/c.jpg", "wolf"], ["imgs/d.jpg", "a/b"]]
    write_csv(data / "labels.csv", ["file", "label"], rows)
    archive = tmp_path / "photos.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(data, arcname=".")
    out = tmp_path / "raw"
    result = ingest_dataset(str(archive), out, cfg(classes=["fox", "hare", "a/b"]))

    report = check_reconciles(out, result)
    assert Counter(reasons_by_item(report).values()) == {
        "duplicate": 1,
        "missing file": 1,
        "empty label": 1,
        "unknown label": 1,
        "invalid label": 1,
    }
    assert reasons_by_item(report)["imgs/b/again.png"] == "duplicate"  # 0.png sorts first
    assert result.per_class == {"fox": 2, "hare": 2}
    assert result.total_in == len(rows)
    check_manifest(out)


def test_split_folders_are_pooled(tmp_path: Path):
    data = tmp_path / "kaggle"
    for split in ("train", "test"):
        for label in ("cat", "dog"):
            jpeg(data / split / label / "1.jpg")
    jpeg(data / "test" / "unlabelled.jpg")
    result = ingest_dataset(str(data), tmp_path / "raw", cfg())
    report = check_reconciles(tmp_path / "raw", result)
    assert reasons_by_item(report) == {"test/unlabelled.jpg": "no class folder"}
    assert {r["path"] for r in check_manifest(tmp_path / "raw")} == {
        f"images/{label}/{split}/1.jpg" for split in ("train", "test") for label in ("cat", "dog")
    }


def test_layout_detection_errors(tmp_path: Path):
    two = tmp_path / "two"
    jpeg(two / "x" / "1.jpg")
    jpeg(two / "y" / "2.jpg")
    write_csv(two / "a.csv", ["file", "label"], [["x/1.jpg", "x"]])
    write_csv(two / "b.csv", ["Image_id", "Animal"], [["x/1.jpg", "x"]])
    with pytest.raises(DatasetError, match="ambiguous dataset layout.*a.csv, b.csv"):
        ingest_dataset(str(two), tmp_path / "o1", cfg())
    # Forcing the layout resolves it.
    assert ingest_dataset(str(two), tmp_path / "o2", cfg(layout="folders", min_images_per_class=1))

    flat = tmp_path / "flat"
    jpeg(flat / "1.jpg")
    jpeg(flat / "2.jpg")
    write_csv(flat / "other.csv", ["name", "kind"], [["1.jpg", "x"], ["2.jpg", "y"]])
    expected = (
        "no label CSV in .*: other.csv has columns name, kind; expected an image column "
        r"\(file/filename/path/image/image_id/id\) and a label column "
        r"\(label/class/species/animal/category\): set data.csv_id_column"
    )
    with pytest.raises(DatasetError, match=expected):
        ingest_dataset(str(flat), tmp_path / "o3", cfg())
    with pytest.raises(DatasetError, match="no label CSV.*other.csv has columns name, kind"):
        ingest_dataset(str(flat), tmp_path / "o4", cfg(layout="csv"))
    with pytest.raises(DatasetError, match=r"image column \('photo'\)"):
        ingest_dataset(str(flat), tmp_path / "o5", cfg(csv_id_column="photo"))
    # Naming the columns makes the same CSV usable.
    named = cfg(csv_id_column="NAME", csv_label_column="kind", min_images_per_class=1)
    assert ingest_dataset(str(flat), tmp_path / "o6", named).per_class == {"x": 1, "y": 1}


def test_csv_with_common_column_names_ids_without_extensions_and_one_image_folder(
    tmp_path: Path,
):
    """`id,species` beside images/ (ids without extension, some upper-case .JPG)."""
    data = tmp_path / "bears"
    rows = []
    for i in range(6):
        ext = ".JPG" if i % 2 else ".jpg"
        jpeg(data / "images" / f"{i:03d}{ext}")
        rows.append([f"{i:03d}", "brown" if i < 3 else "polar"])
    jpeg(data / "images" / "stray.jpg")
    write_csv(data / "labels.csv", ["ID", "Species", "notes"], [[*r, "-"] for r in rows])
    out = tmp_path / "raw"
    result = ingest_dataset(str(data), out, cfg())
    report = check_reconciles(out, result)
    assert result.per_class == {"brown": 3, "polar": 3}
    assert reasons_by_item(report) == {"images/stray.jpg": "not in CSV"}
    assert {r["path"] for r in check_manifest(out)} >= {
        "images/brown/000.jpg",
        "images/polar/005.JPG",
    }
    assert result.name == "bears" and read_json(out / "source.json")["name"] == "bears"


def test_one_class_is_refused(tmp_path: Path, capsys):
    """A folder whose only subfolder is images/ is not a one-class dataset called "images"."""
    data = tmp_path / "photos"
    for i in range(4):
        jpeg(data / "images" / f"{i}.jpg")
    line = cli_error(capsys, "--source", str(data), "--out", str(tmp_path / "raw"))
    assert "one class only (images, 4 images): a classifier needs at least two" in line
    assert "the only class folder is images/" in line
    assert not (tmp_path / "raw").exists()
    # A CSV beside it that names one label is refused too.
    write_csv(data / "labels.csv", ["file", "label"], [[f"{i}.jpg", "cat"] for i in range(4)])
    line = cli_error(capsys, "--source", str(data), "--out", str(tmp_path / "raw"))
    assert "one class only (cat, 4 images)" in line and "names one label only" in line


def bear_folder(root: Path) -> Path:
    """Like the public bear dataset: images/ beside bear_data.csv and bear_raw_data.csv."""
    rows = []
    for i in range(6):
        jpeg(root / "images" / f"{i:03d}.jpg")
        rows.append([f"images/{i:03d}.jpg", "brown" if i < 3 else "black"])
    write_csv(root / "bear_data.csv", ["file", "label"], rows)
    raw = [[f, label, "web"] for f, label in rows] + [["images/999.jpg", "brown", "web"]]
    write_csv(root / "bear_raw_data.csv", ["file", "label", "origin"], raw)
    return root


def test_a_folder_with_two_label_csvs_ingests_with_one_setting(tmp_path: Path, capsys):
    data = bear_folder(tmp_path / "bears")
    line = cli_error(capsys, "--source", str(data), "--out", str(tmp_path / "raw"))
    assert "several label CSVs (bear_data.csv, bear_raw_data.csv)" in line
    assert "data.labels_csv" in line
    assert "layout=folders" not in line  # one folder (images/) is no class-folder layout
    assert not (tmp_path / "raw").exists()

    out = tmp_path / "by-setting"
    named = ingest_dataset(str(data), out, cfg(labels_csv="bear_data.csv"))
    assert named.per_class == {"black": 3, "brown": 3} and named.quarantined == 0
    check_reconciles(out, named)
    # The CSV itself as the source: its images are resolved beside it, named by its folder.
    argv = ["ingest", "--source", str(data / "bear_data.csv"), "--out", str(tmp_path / "by-src")]
    assert main(argv) == 0
    by_source = read_json(tmp_path / "by-src" / "source.json")
    assert by_source["name"] == "bears"
    assert by_source["content"] == read_json(out / "source.json")["content"]
    # The other CSV names one missing file: quarantined, counted.
    other = ingest_dataset(str(data), tmp_path / "raw-csv", cfg(labels_csv="bear_raw_data.csv"))
    assert other.reasons == {"missing file": 1}
    with pytest.raises(DatasetError, match=r"data.labels_csv=nope.csv: no such file .*bear_data"):
        ingest_dataset(str(data), tmp_path / "o", cfg(labels_csv="nope.csv"))


def test_one_class_folder_beside_a_label_csv_points_at_the_csv(tmp_path: Path, capsys):
    """layout=folders with images/ only: the hint names the CSV that is there, never "add one"."""
    data = bear_folder(tmp_path / "bears")
    (data / "bear_raw_data.csv").unlink()
    argv = ["--source", str(data), "--out", str(tmp_path / "raw"), "--set", "data.layout=folders"]
    line = cli_error(capsys, *argv)
    assert "bear_data.csv beside it labels images: set data.layout=csv" in line
    assert "add a label CSV" not in line


def test_the_dataset_key_follows_the_content_not_the_name(tmp_path: Path):
    """The same photos under two folder names (or archived) -> one champion key; other
    photos under the same name -> another key; the name is only shown."""
    first = tmp_path / "bears"
    for label in ("black", "brown"):
        for i in range(3):
            jpeg(first / label / f"{i}.jpg")
    renamed = tmp_path / "bears-1epoch"
    shutil.copytree(first, renamed)
    with tarfile.open(tmp_path / "upload.tar.gz", "w:gz") as tf:
        tf.add(first, arcname="wrapped")

    def key_of(source: Path, out: str) -> DatasetId:
        ingest_dataset(str(source), tmp_path / out, cfg())
        return DatasetId.from_folder(tmp_path / out)

    ids = [key_of(first, "a"), key_of(renamed, "b"), key_of(tmp_path / "upload.tar.gz", "c")]
    assert [i.name for i in ids] == ["bears", "bears-1epoch", "upload"]
    assert len({i.key for i in ids}) == 1 and ids[0].key.startswith("data-")
    different = tmp_path / "other" / "bears"  # same folder name, other photos
    for label in ("black", "brown"):
        for i in range(3):
            jpeg(different / label / f"{i}.jpg")
    other = key_of(different, "d")
    assert other.name == "bears" and other.key != ids[0].key
    # Same photos, one relabelled: another dataset too.
    (renamed / "brown" / "1.jpg").rename(renamed / "black" / "9.jpg")
    assert key_of(renamed, "e").key != ids[0].key
    # Data ingested before the fingerprint (no "content") keeps its old key.
    old = DatasetId.of({"name": "bears"}, ["black", "brown"])
    assert old.key == old.legacy_key and old.key.startswith("bears-")


def test_a_content_keyed_champion_is_found_by_its_name(s3: str):
    dataset = DatasetId("bears", ("black", "brown"), "f" * 32)
    legacy = DatasetId("wolves", ("grey", "red"))
    for each in (dataset, legacy):
        pointer = {"run_id": "r1", "dataset": each.to_dict()}
        storage.write_text(champion.pointer_uri(s3, each.key), json.dumps(pointer))
    assert champion.find_champion(s3, "bears")["dataset"]["key"] == dataset.key
    assert champion.find_champion(s3, dataset.key)["dataset"]["key"] == dataset.key
    assert champion.find_champion(s3, "wolves")["dataset"]["key"] == legacy.key
    found = champion.find_champion(s3, configured_name="bears")
    assert found["dataset"]["name"] == "bears"


# -- archives that try to write outside their target -------------------------------------------


def test_unsafe_archive_members_are_refused(tmp_path: Path):
    good = [jpeg_bytes() for _ in range(6)]
    zip_path = tmp_path / "evil.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("cat/1.jpg", good[0])
        zf.writestr("cat/2.jpg", good[1])
        zf.writestr("dog/1.jpg", good[4])
        zf.writestr("dog/2.jpg", good[5])
        zf.writestr("../zip-escape.jpg", good[2])
        zf.writestr("/tmp/zip-absolute.jpg", good[2])
        link = zipfile.ZipInfo("cat/link.jpg")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "../../../etc/passwd")

    tar_path = tmp_path / "evil.tar"
    with tarfile.open(tar_path, "w") as tf:

        def add(name: str, data: bytes = b"", **kw) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            for key, value in kw.items():
                setattr(info, key, value)
            tf.addfile(info, io.BytesIO(data))

        add("dog/1.jpg", good[0])
        add("dog/2.jpg", good[3])
        add("cat/1.jpg", good[4])
        add("cat/2.jpg", good[5])
        add("../tar-escape.jpg", good[2])
        add("/tmp/tar-absolute.jpg", good[2])
        add("dog/sym.jpg", type=tarfile.SYMTYPE, linkname="/etc/passwd")
        add("dog/hard.jpg", type=tarfile.LNKTYPE, linkname="dog/1.jpg")

    for archive, escaped in ((zip_path, "zip-escape.jpg"), (tar_path, "tar-escape.jpg")):
        out = tmp_path / f"out-{archive.stem}{archive.suffix}"
        result = ingest_dataset(str(archive), out, cfg())
        report = check_reconciles(out, result)
        refused = [i for i in report["items"] if i["reason"] == "unsafe archive member"]
        assert len(refused) == 3 + (archive == tar_path), refused
        assert result.kept == 4
        assert not (tmp_path / escaped).exists() and not (tmp_path.parent / escaped).exists()
        assert (
            not Path("/tmp/zip-absolute.jpg").exists()
            and not Path("/tmp/tar-absolute.jpg").exists()
        )


# -- S3 and http sources, and the content-addressed cache --------------------------------------


def test_s3_prefix_tree_and_archive_object(s3: str, zoo: Path, tmp_path: Path):
    storage.upload_dir(zoo, f"s3://{s3}/origin/zoo")
    from_tree = ingest_dataset(f"s3://{s3}/origin/zoo", tmp_path / "tree", cfg())
    local = ingest_dataset(str(zoo), tmp_path / "local", cfg())
    assert from_tree.version == local.version and from_tree.kept == local.kept
    check_reconciles(tmp_path / "tree", from_tree)

    archive = tmp_path / "zoo.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(zoo.rglob("*")):
            zf.write(path, path.relative_to(zoo))
    storage.upload_file(archive, f"s3://{s3}/origin/zoo.zip")
    from_zip = ingest_dataset(f"s3://{s3}/origin/zoo.zip", tmp_path / "zip", cfg())
    assert from_zip.version == local.version
    # A prefix that holds one archive is unpacked too.
    storage.upload_file(archive, f"s3://{s3}/only-archive/data.zip")
    assert ingest_dataset(f"s3://{s3}/only-archive", tmp_path / "p", cfg()).version == local.version


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        pass


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on 127.0.0.1 serving a folder; yields (base URL, folder)."""
    folder = tmp_path / "www"
    folder.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", folder
    server.shutdown()
    server.server_close()


def test_http_archive(http_root, zoo: Path, tmp_path: Path):
    base, www = http_root
    with tarfile.open(www / "zoo.tar.gz", "w:gz") as tf:
        tf.add(zoo, arcname="zoo")
    result = ingest_dataset(f"{base}/zoo.tar.gz", tmp_path / "raw", cfg())
    check_reconciles(tmp_path / "raw", result)
    assert result.version == ingest_dataset(str(zoo), tmp_path / "local", cfg()).version


def test_cache_serves_a_second_ingest_without_the_origin(s3: str, zoo: Path, tmp_path: Path):
    origin = f"s3://{s3}/origin/zoo"
    storage.upload_dir(zoo, origin)
    settings = cfg(cache_uri=f"s3://{s3}/datasets")
    first = ingest_dataset(origin, tmp_path / "first", settings)
    assert not first.from_cache
    assert first.cache_location == f"s3://{s3}/datasets/zoo/{first.version}"
    assert storage.exists(f"{first.cache_location}/_COMPLETE")
    assert storage.exists(f"{first.cache_location}/manifest.csv")

    s3_client = storage.client()
    for key, _ in storage.list_keys(origin):
        s3_client.delete_object(Bucket=s3, Key=key)
    second = ingest_dataset(origin, tmp_path / "second", settings)
    assert second.from_cache and second.version == first.version
    assert (second.total_in, second.kept, second.reasons) == (
        first.total_in,
        first.kept,
        first.reasons,
    )
    assert check_manifest(tmp_path / "second") == check_manifest(tmp_path / "first")
    assert not (tmp_path / "second" / "_COMPLETE").exists()
    # --refresh goes to the (now empty) origin.
    assert (
        main(
            [
                "ingest",
                "--source",
                origin,
                "--out",
                str(tmp_path / "third"),
                "--refresh",
                "--set",
                f"data.cache_uri=s3://{s3}/datasets",
            ]
        )
        == 2
    )


# -- clear one-line errors through the CLI -----------------------------------------------------


def cli_error(capsys, *argv: str) -> str:
    assert main(["ingest", *argv]) in (2, 75)  # 75: a transient failure (fauna.errors)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and err[-1].startswith("fauna ingest: error: ")
    assert "Traceback" not in "\n".join(err)
    return err[-1]


def test_missing_kaggle_credentials(capsys, monkeypatch, tmp_path: Path):
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-kaggle"))
    monkeypatch.setenv("HOME", str(tmp_path))
    line = cli_error(capsys, "--source", "kaggle:owner/dataset", "--out", str(tmp_path / "o"))
    assert "Kaggle credentials missing" in line
    line = cli_error(capsys, "--out", str(tmp_path / "o"))  # the default source is Kaggle
    assert "Kaggle credentials missing" in line


def test_s3_errors(capsys, monkeypatch, s3: str, tmp_path: Path):
    line = cli_error(capsys, "--source", "s3://no-such-bucket/x", "--out", str(tmp_path / "o"))
    assert "bucket does not exist: s3://no-such-bucket" in line
    line = cli_error(capsys, "--source", f"s3://{s3}/nothing", "--out", str(tmp_path / "o"))
    assert f"nothing found under s3://{s3}/nothing" in line
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv(storage.TIMEOUT_ENV, "3")  # give up on the closed port quickly
    line = cli_error(capsys, "--source", f"s3://{s3}/x", "--out", str(tmp_path / "o"))
    assert "cannot reach the S3 endpoint http://127.0.0.1:9" in line


def test_local_errors(capsys, http_root, tmp_path: Path):
    line = cli_error(capsys, "--source", str(tmp_path / "nope"), "--out", str(tmp_path / "o"))
    assert "source not found" in line

    bad = tmp_path / "bad"
    (bad / "cat").mkdir(parents=True)
    (bad / "cat" / "a.jpg").write_bytes(b"")
    (bad / "cat" / "b.jpg").write_text("text")
    line = cli_error(capsys, "--source", str(bad), "--out", str(tmp_path / "o"))
    assert "empty dataset: no valid image" in line and "1 zero-byte file" in line
    assert "e.g. cat/a.jpg" in line
    assert not (tmp_path / "o").exists()  # nothing is left that would block a rerun

    (tmp_path / "empty").mkdir()
    line = cli_error(capsys, "--source", str(tmp_path / "empty"), "--out", str(tmp_path / "o2"))
    assert "empty dataset" in line and "holds no files" in line

    base, _ = http_root
    line = cli_error(capsys, "--source", f"{base}/missing.zip", "--out", str(tmp_path / "o3"))
    assert "HTTP 404" in line

    line = cli_error(capsys, "--source", str(bad), "--out", str(bad / "raw"))
    assert "must not overlap" in line

    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    line = cli_error(capsys, "--source", str(bad), "--out", str(tmp_path / "busy"))
    assert "not empty" in line and (tmp_path / "busy" / "keep.txt").is_file()


def test_cli_prints_a_summary(capsys, zoo: Path, tmp_path: Path):
    out = tmp_path / "raw"
    limit = f"data.max_image_pixels={MAX_PIXELS}"
    assert main(["ingest", "--source", str(zoo), "--out", str(out), "--set", limit]) == 0
    printed = capsys.readouterr()  # one summary line, logged (stderr); nothing on stdout
    assert printed.out == "" and printed.err.count("[ingest] 10 images in 2 classes") == 1
    assert f"(report: {out / 'report.txt'})" in printed.err


@pytest.mark.filterwarnings("ignore:You may be attemping to run a task:RuntimeWarning")
def test_component_runs_under_kfp_local(tmp_path: Path, zoo: Path):
    from kfp import local

    from fauna.components.ingest import ingest
    from fauna.config import Config

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"))
    config = Config().merged({"data": {"source": str(zoo), "max_image_pixels": MAX_PIXELS}})
    task = ingest(source="", data_config=config.to_dict()["data"])
    raw = task.outputs["raw"]
    assert raw.metadata["kept"] == 10 and raw.metadata["num_classes"] == 2
    assert raw.metadata["name"] == "zoo"
    assert Path(raw.path, "manifest.csv").is_file()


# -- names, and secrets kept out of everything ingest writes or says ----------------------------


@pytest.mark.parametrize(
    ("source", "name"),
    [
        (
            "kaggle:sanjeetbeniwal/animal-classification-30-classes",
            "animal-classification-30-classes",
        ),
        ("kaggle:owner/bears/versions/3", "bears"),
        ("s3://bucket/datasets/bears/", "bears"),
        ("s3://bucket/datasets/bears.tar.gz", "bears"),
        ("s3://bucket", "bucket"),
        ("https://example.org/files/Bear%20Photos.zip?X-Amz-Signature=abc", "Bear-20Photos"),
        ("https://example.org/download.php?id=7", "download"),
    ],
)
def test_dataset_name_from_the_source(source: str, name: str):
    assert dataset_name(source) == name


def test_every_kind_of_source_is_one_entry_of_one_table(tmp_path: Path):
    from fauna.pipelines.local_docker import PASSED_ENV
    from fauna.pipelines.pipeline import KAGGLE_ENV_KEYS
    from fauna.sources import SOURCES, find, secret_env_keys, source_kind

    jpeg(tmp_path / "folder" / "cat" / "1.jpg")
    (tmp_path / "labels.csv").write_text("file,label\n")
    (tmp_path / "data.zip").write_bytes(b"PK\x05\x06" + bytes(18))
    examples = {
        "kaggle": "kaggle:owner/bears",
        "s3": "s3://bucket/datasets/bears/",
        "http": "https://host/bears.zip",
        "csv": str(tmp_path / "labels.csv"),
        "archive": str(tmp_path / "data.zip"),
        "folder": str(tmp_path / "folder"),
    }
    assert sorted(kind.kind for kind in SOURCES) == sorted(examples)
    assert {kind: find(source).kind for kind, source in examples.items()} == {
        kind: kind for kind in examples
    }
    assert find(str(tmp_path / "missing")) is None  # fetch says "source not found"
    assert [source_kind(examples[k]) for k in ("csv", "archive", "folder")] == ["local"] * 3
    # The secrets a source reads reach the cluster's ingest task and the Docker route.
    assert secret_env_keys() == KAGGLE_ENV_KEYS == ("KAGGLE_USERNAME", "KAGGLE_KEY")
    assert set(secret_env_keys()) <= set(PASSED_ENV)


def test_dataset_name_of_local_folders_and_archives(tmp_path: Path):
    (tmp_path / "my zoo").mkdir()
    assert dataset_name(str(tmp_path / "my zoo")) == "my-zoo"
    assert dataset_name(str(tmp_path / "birds.tar.gz")) == "birds"
    assert dataset_name(str(tmp_path / "cats.tgz")) == "cats"


@pytest.mark.parametrize(
    ("source", "shown"),
    [
        (
            "https://bucket.s3.amazonaws.com/data/zoo.zip?X-Amz-Algorithm=AWS4-HMAC-SHA256"
            "&X-Amz-Credential=AKIAEXAMPLE%2F20250101&X-Amz-Signature=deadbeef#frag",
            "https://bucket.s3.amazonaws.com/data/zoo.zip",
        ),
        ("http://user:s3cret@host:8080/zoo.tar", "http://host:8080/zoo.tar"),
        ("s3://bucket/prefix?versionId=1", "s3://bucket/prefix"),
        ("kaggle:owner/dataset", "kaggle:owner/dataset"),
        ("/data/zoo?x", "/data/zoo?x"),  # a local path is shown as it is
    ],
)
def test_redact_keeps_scheme_host_and_path_only(source: str, shown: str):
    assert redact(source) == shown


class _RecordingHandler(_QuietHandler):
    seen: list[dict[str, str]] = []

    def do_GET(self):  # noqa: N802 - the stdlib's name
        self.seen.append({"path": self.path, "auth": self.headers.get("Authorization", "")})
        super().do_GET()


def test_a_presigned_url_is_redacted_everywhere(capsys, zoo: Path, tmp_path: Path):
    www = tmp_path / "www"
    www.mkdir()
    with tarfile.open(www / "zoo.tar.gz", "w:gz") as tf:
        tf.add(zoo, arcname="zoo")
    handler = functools.partial(_RecordingHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    secrets = ("s3cret", "AKIAEXAMPLE", "deadbeefsignature", "X-Amz")
    url = (
        f"http://reader:s3cret@127.0.0.1:{port}/zoo.tar.gz?X-Amz-Credential=AKIAEXAMPLE"
        "&X-Amz-Signature=deadbeefsignature"
    )
    out = tmp_path / "raw"
    try:
        argv = ["ingest", "--source", url, "--out", str(out), "-v"]
        assert main([*argv, "--set", f"data.max_image_pixels={MAX_PIXELS}"]) == 0
        metadata = ingest_dataset(url, tmp_path / "again", cfg()).metadata()  # KFP's view
    finally:
        server.shutdown()
        server.server_close()
    printed = capsys.readouterr()
    # The request carried the query and the credentials (as Basic auth); nothing else does.
    assert _RecordingHandler.seen[-1]["path"].endswith("X-Amz-Signature=deadbeefsignature")
    assert _RecordingHandler.seen[-1]["auth"].startswith("Basic ")
    shown = f"http://127.0.0.1:{port}/zoo.tar.gz"
    assert read_json(out / "source.json")["source"] == shown == metadata["source"]
    written = "".join(p.read_text() for p in out.iterdir() if p.suffix in (".json", ".txt"))
    for text in (written, printed.out, printed.err, json.dumps(metadata)):
        assert not [s for s in secrets if s in text], text
    assert shown in (out / "report.txt").read_text() and shown in printed.err
    assert read_json(out / "source.json")["name"] == metadata["name"] == "zoo"


# -- bounded ingest: bombs, huge members, endless streams, with flat memory ---------------------

FLAT_MIB = 64  # peak RSS may exceed a tiny ingest's by at most this much, whatever the input


def run_measured(argv: list[str], timeout: float = 180) -> tuple[int, str, float, float]:
    """`fauna <argv>` in a child process: (exit code, stderr, peak RSS in MiB, seconds)."""
    started = time.monotonic()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    child = subprocess.Popen(
        [sys.executable, "-m", "fauna.cli", *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    timer = threading.Timer(timeout, child.kill)
    timer.start()
    try:
        err = child.stderr.read()
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak RSS
    finally:
        timer.cancel()
    child.returncode = os.waitstatus_to_exitcode(status)
    child.stderr.close()
    return child.returncode, err, usage.ru_maxrss / 1024, time.monotonic() - started


def error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert lines and lines[-1].startswith("fauna ingest: error: "), stderr[-2000:]
    assert "Traceback" not in stderr
    return lines[-1]


@pytest.fixture(scope="module")
def baseline_rss(tmp_path_factory: pytest.TempPathFactory) -> float:
    """Peak RSS of ingesting a handful of small images: what 'flat' is measured against."""
    root = tmp_path_factory.mktemp("baseline")
    for label in ("cat", "dog"):
        for i in range(3):
            jpeg(root / "src" / label / f"{i}.jpg")
    rc, err, peak, _ = run_measured(
        ["ingest", "--source", str(root / "src"), "--out", str(root / "o")]
    )
    assert rc == 0, err
    return peak


def zeros_member(size: int) -> io.BufferedReader:
    class Zeros(io.RawIOBase):
        left = size

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            n = min(len(buffer), self.left)
            buffer[:n] = bytes(n)
            self.left -= n
            return n

    return io.BufferedReader(Zeros())


def two_small_classes(add) -> None:
    """Four real images in cat/ and dog/, through `add(name, bytes)`."""
    for label in ("cat", "dog"):
        for i in range(2):
            add(f"{label}/{i}.jpg", jpeg_bytes())


def test_a_zip_bomb_is_stopped_before_unpacking(baseline_rss: float, tmp_path: Path):
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        two_small_classes(zf.writestr)
        with zf.open("dog/bomb.jpg", "w") as fh:
            for _ in range(256):
                fh.write(bytes(1 << 20))  # 256 MiB of zeros in ~260 kB
    out = tmp_path / "raw"
    rc, err, peak, seconds = run_measured(["ingest", "--source", str(bomb), "--out", str(out)])
    line = error_line(err)
    assert rc == 2 and "bomb.zip" in line and "(a zip bomb?); compression ratio: " in line
    assert "> data.max_compression_ratio=100; stopped (raise data.max_compression_ratio" in line
    assert peak <= baseline_rss + FLAT_MIB, (peak, baseline_rss)
    assert seconds < 60
    assert not out.exists() and list(tmp_path.glob(".raw.*")) == []
    print(
        f"zip bomb ({bomb.stat().st_size} B -> 256 MiB): refused in {seconds:.1f}s, "
        f"peak {peak:.0f} MiB (baseline {baseline_rss:.0f} MiB)"
    )


@pytest.fixture(scope="module")
def huge_members(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shape of the issue's archive, scaled: four 256 MiB members in a ~1 MB tar.gz."""
    archive = tmp_path_factory.mktemp("huge") / "huge.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tf:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))

        two_small_classes(add)
        for i in range(4):
            info = tarfile.TarInfo(f"dog/huge{i}.jpg")
            info.size = 256 << 20
            tf.addfile(info, zeros_member(info.size))
    return archive


def test_huge_archive_members_are_refused_with_flat_memory(
    baseline_rss: float, huge_members: Path, tmp_path: Path
):
    out = tmp_path / "raw"
    rc, err, peak, seconds = run_measured(
        ["ingest", "--source", str(huge_members), "--out", str(out)]
    )
    line = error_line(err)
    assert rc == 2 and "data.max_compression_ratio=100" in line  # judged from the first header
    assert peak <= baseline_rss + FLAT_MIB and seconds < 60
    assert not out.exists()

    # With the ratio check lifted, each member is refused by size, unwritten, the rest kept.
    argv = ["ingest", "--source", str(huge_members), "--out", str(out)]
    argv += ["--set", "data.max_compression_ratio=1000000"]
    rc, err, peak, seconds = run_measured(argv)
    assert rc == 0, err
    assert peak <= baseline_rss + FLAT_MIB, (peak, baseline_rss)
    report = read_json(out / "quarantine.json")
    assert Counter(reasons_by_item(report).values()) == {"file too large": 4}
    assert "> data.max_file_bytes=100000000" in report["items"][0]["detail"]
    assert report["kept"] == 4 and report["reconciles"]
    print(
        f"4 x 256 MiB members ({huge_members.stat().st_size} B): refused in {seconds:.1f}s, "
        f"peak {peak:.0f} MiB (baseline {baseline_rss:.0f} MiB)"
    )


class _EndlessHandler(http.server.BaseHTTPRequestHandler):
    """Streams zeros (or announces a size first, with ?announce=N; starts like a zip with
    ?zip; sends one byte a second with ?slow, 1 MiB every 50 ms with ?paced). Each loop is
    bounded: it stops by itself after 2 GiB or 90 s, whichever comes first, even if the
    client never hangs up."""

    def do_GET(self):  # noqa: N802 - the stdlib's name
        self.send_response(200)
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query, True)
        if "announce" in query:
            self.send_header("Content-Length", query["announce"][0])
        self.end_headers()
        slow = "slow" in query
        chunk = b"\0" if slow else bytes(1 << 20)
        deadline = time.monotonic() + 90
        try:
            if "zip" in query:
                self.wfile.write(b"PK\x03\x04")
            for _ in range(2048 if not slow else 90):
                self.wfile.write(chunk)
                self.wfile.flush()
                if time.monotonic() > deadline:
                    break
                if slow:
                    time.sleep(1)
                elif "paced" in query:  # ~20 MB/s: outlasts a 2 s deadline on any machine
                    time.sleep(0.05)
        except OSError:  # the client hung up: what we want
            pass

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        pass


@pytest.fixture
def endless_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EndlessHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_an_endless_http_stream_is_cut_at_the_limit(
    baseline_rss: float, endless_server: str, tmp_path: Path
):
    out = tmp_path / "raw"
    argv = ["ingest", "--source", f"{endless_server}/data.zip?zip", "--out", str(out)]
    rc, err, peak, seconds = run_measured([*argv, "--set", "data.max_dataset_bytes=64000000"])
    line = error_line(err)
    assert rc == 2 and "download of" in line and "passed 64000000 bytes" in line
    assert "data.max_dataset_bytes=64000000; stopped (raise data.max_dataset_bytes" in line
    assert peak <= baseline_rss + FLAT_MIB and seconds < 60
    assert not out.exists() and list(tmp_path.glob(".raw.*")) == []
    print(f"endless stream cut at 64 MB in {seconds:.1f}s, peak {peak:.0f} MiB")

    # An announced size over the limit is refused before a byte is read.
    with pytest.raises(FaunaError, match=r"is 99999999999 bytes: .*data.max_dataset_bytes"):
        ingest_dataset(f"{endless_server}/data.zip?announce=99999999999", out, cfg())


def test_a_stream_of_zeros_is_refused_from_its_first_bytes(endless_server: str, tmp_path: Path):
    """No Content-Length, not an archive: refused at the first 512 bytes, not after 20 GB."""
    started = time.monotonic()
    with pytest.raises(FaunaError, match=r"data.zip is not .* archive .*only zero bytes"):
        ingest_dataset(f"{endless_server}/data.zip", tmp_path / "o1", cfg())
    assert time.monotonic() - started < 10
    assert list(tmp_path.glob(".o1.*")) == []
    # A local "archive" of 1 GB of zeros (sparse): judged from its first bytes, in no time.
    zeros = tmp_path / "zeros.tar"
    with zeros.open("wb") as fh:
        fh.truncate(1 << 30)
    started = time.monotonic()
    with pytest.raises(FaunaError, match=r"zeros.tar is not .* archive .*only zero bytes"):
        ingest_dataset(str(zeros), tmp_path / "o2", cfg())
    assert time.monotonic() - started < 5


def test_a_slow_or_endless_download_stops_by_rate_or_deadline(endless_server: str, tmp_path: Path):
    slow = cfg(min_download_bytes_per_s=1000, download_rate_window_s=2)
    started = time.monotonic()
    with pytest.raises(FaunaError, match=r"too slow: \d+ bytes/s over the last \d+ s < data.min_"):
        ingest_dataset(f"{endless_server}/data.tgz?zip&slow", tmp_path / "o1", slow)
    assert time.monotonic() - started < 10
    deadline = cfg(download_timeout_s=2, max_dataset_bytes=10**12)
    started = time.monotonic()
    with pytest.raises(
        FaunaError, match=r"still running after \d+ bytes; seconds: \d+ > data.down"
    ):
        ingest_dataset(f"{endless_server}/data.zip?zip&paced", tmp_path / "o2", deadline)
    assert time.monotonic() - started < 10
    assert list(tmp_path.glob(".o*")) == []


def test_sigterm_mid_download_leaves_no_partial_folder(endless_server: str, tmp_path: Path):
    out = tmp_path / "raw"
    argv = ["ingest", "--source", f"{endless_server}/data.zip?zip&slow", "--out", str(out)]
    child = subprocess.Popen(
        [sys.executable, "-m", "fauna.cli", *argv, "--set", "data.min_download_bytes_per_s=0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".raw.partial-*/.fauna-ingest-work/download/data.zip")):
            assert child.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        child.terminate()
        assert child.wait(timeout=30) == 128 + 15
    finally:
        child.kill()
        child.stderr.close()
    assert not out.exists() and list(tmp_path.glob(".raw.*")) == []


def test_file_count_limit(tmp_path: Path):
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(12):
            zf.writestr(f"{'cat' if i % 2 else 'dog'}/{i}.jpg", jpeg_bytes())
    with pytest.raises(FaunaError, match=r"many.zip has more members: 12 > data.max_files=10"):
        ingest_dataset(str(archive), tmp_path / "o1", cfg(max_files=10))
    folder = tmp_path / "many"
    extract = zipfile.ZipFile(archive)
    extract.extractall(folder)
    # A tar.gz: counted in a pass over the headers alone, before anything is unpacked.
    with tarfile.open(tmp_path / "many.tar.gz", "w:gz") as tf:
        tf.add(folder, arcname=".")
    with pytest.raises(FaunaError, match=r"many.tar.gz has more members: 11 > data.max_files=10"):
        ingest_dataset(str(tmp_path / "many.tar.gz"), tmp_path / "o1", cfg(max_files=10))
    # Counted while walking the folder: it stops at the first file over the limit.
    with pytest.raises(FaunaError, match=r"more files: 11 > data.max_files=10"):
        ingest_dataset(str(folder), tmp_path / "o2", cfg(max_files=10))
    with pytest.raises(FaunaError, match=r"the images total \d+ bytes: .*max_dataset_bytes=1000"):
        ingest_dataset(str(folder), tmp_path / "o3", cfg(max_dataset_bytes=1000))
    # A single file over data.max_file_bytes is quarantined, unread; the rest is kept.
    big = folder / "cat" / "big.jpg"
    jpeg(big, size=(60, 60))
    limit = big.stat().st_size - 1
    smaller = [p for p in folder.rglob("*.jpg") if p.stat().st_size <= limit]
    result = ingest_dataset(str(folder), tmp_path / "o4", cfg(max_file_bytes=limit))
    assert result.reasons["file too large"] == 13 - len(smaller)
    assert result.kept == len(smaller)


# -- whole outputs only: refusals, kills, and leftovers cleaned ---------------------------------


def test_a_failed_ingest_leaves_nothing_that_blocks_a_rerun(zoo: Path, tmp_path: Path):
    bad = tmp_path / "bad"
    (bad / "cat").mkdir(parents=True)
    (bad / "cat" / "a.jpg").write_text("not an image")
    out = tmp_path / "raw"
    with pytest.raises(DatasetError, match="empty dataset"):
        ingest_dataset(str(bad), out, cfg())
    assert not out.exists() and list(tmp_path.glob(".raw.*")) == []
    assert ingest_dataset(str(zoo), out, cfg()).kept == 10


def test_a_second_writer_is_refused_while_the_first_runs(zoo: Path, tmp_path: Path):
    out = tmp_path / "raw"
    with step_output(out, "ingest"):  # a first ingest, mid-run
        argv = ["ingest", "--source", str(zoo), "--out", str(out)]
        rc, err, _, _ = run_measured(argv)
    assert rc == 2 and "another process is writing" in error_line(err)


def test_killed_at_a_random_moment_then_rerun_gives_the_same_bytes(zoo: Path, tmp_path: Path):
    """From an archive, so the kill can land while the download is being unpacked."""
    archive = tmp_path / "zoo.tar"
    with tarfile.open(archive, "w") as tf:
        tf.add(zoo, arcname="zoo")
    started = time.monotonic()
    ingest_dataset(str(archive), tmp_path / "reference", cfg())
    window = 1.5 * (time.monotonic() - started) + 0.1
    out = tmp_path / "raw"
    argv = ["ingest", "--source", str(archive), "--out", str(out)]
    argv += ["--set", f"data.max_image_pixels={MAX_PIXELS}"]
    seed = int.from_bytes(os.urandom(4), "little")
    outcome = kill_at_random(argv, out, window, seed, preload=("fauna.cli",))
    print(f"kill test (seed {seed}): {outcome}")
    if outcome["killed"]:
        from fauna.config import Config
        from fauna.steps.preprocess import preprocess_dataset

        assert not out.exists() or read_marker(out) is not None
        for partial in outcome["partial"]:
            with pytest.raises(OutputError, match="not a completed step output"):
                preprocess_dataset(partial, tmp_path / "pre", Config().preprocess)
    ingest_dataset(str(archive), out, cfg())
    assert partial_folders(out) == [] and list(tmp_path.glob("**/.fauna-ingest-*")) == []
    assert tree_bytes(out) == tree_bytes(tmp_path / "reference")


# -- ingest from S3 under faults (the fault-injection proxy of tests/faults.py) -----------------


def test_s3_ingest_survives_503s(faulty_s3, zoo: Path, tmp_path: Path, monkeypatch):
    from faults import SLOW_DOWN

    # The default deadline: with parallel downloads, one object can draw several 503s in a
    # row, and SlowDown backs off for seconds (the fixture's 10 s would give up).
    monkeypatch.setenv(storage.TIMEOUT_ENV, str(storage.DEFAULT_TIMEOUT_SECONDS))
    storage.upload_dir(zoo, faulty_s3.uri("origin/zoo"))
    local = ingest_dataset(str(zoo), tmp_path / "local", cfg())
    faulty_s3.proxy.fail_every(3, SLOW_DOWN)
    result = ingest_dataset(faulty_s3.uri("origin/zoo"), tmp_path / "raw", cfg())
    assert faulty_s3.proxy.faults > 0
    assert result.version == local.version and result.kept == local.kept
    images = {k: v for k, v in tree_bytes(tmp_path / "raw").items() if k.startswith("images/")}
    assert images == {k: v for k, v in tree_bytes(tmp_path / "local").items() if k in images}
    check_reconciles(tmp_path / "raw", result)


def test_s3_stalled_endpoint_fails_in_one_line(faulty_s3, monkeypatch, capsys, tmp_path: Path):
    from faults import STALL

    monkeypatch.setenv(storage.TIMEOUT_ENV, "3")
    faulty_s3.proxy.always(STALL)
    out = tmp_path / "raw"
    started = time.monotonic()
    line = cli_error(capsys, "--source", faulty_s3.uri("origin/zoo"), "--out", str(out))
    assert time.monotonic() - started < 30
    assert faulty_s3.bucket in line
    assert not out.exists() and list(tmp_path.glob(".raw.*")) == []


def test_s3_connection_cut_mid_download_accepts_nothing(
    faulty_s3, monkeypatch, zoo: Path, tmp_path: Path
):
    storage.upload_dir(zoo, faulty_s3.uri("origin/zoo"))
    monkeypatch.setenv(storage.TIMEOUT_ENV, "3")
    out = tmp_path / "raw"
    faulty_s3.proxy.cut_after(6)  # the bucket check and listing pass, then downloads drop
    with pytest.raises(FaunaError):
        ingest_dataset(faulty_s3.uri("origin/zoo"), out, cfg())
    assert faulty_s3.proxy.faults > 0
    assert not out.exists() and list(tmp_path.glob(".raw.*")) == []
    faulty_s3.proxy.reset()
    local = ingest_dataset(str(zoo), tmp_path / "local", cfg())
    assert ingest_dataset(faulty_s3.uri("origin/zoo"), out, cfg()).version == local.version


def test_limits_and_classes_are_checked_in_the_config():
    from fauna.config import Config, ConfigError

    with pytest.raises(ConfigError, match="data.classes: must list at least two classes"):
        Config().merged({"data": {"classes": ["cat"]}})
    with pytest.raises(
        ConfigError, match="data.max_files: Input should be greater than or equal to 1"
    ):
        Config().merged({"data": {"max_files": 0}})
    with pytest.raises(
        ConfigError, match="data.max_compression_ratio: Input should be greater than or equal to 1"
    ):
        Config().merged({"data": {"max_compression_ratio": 0.5}})
    assert Config().data.name == ""  # named after the source unless set
