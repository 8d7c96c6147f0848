"""ingest on real generated files, through every kind of source, with every kind of bad input."""

from __future__ import annotations

import csv
import functools
import hashlib
import http.server
import io
import json
import stat
import struct
import tarfile
import threading
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fauna import storage
from fauna.cli import main
from fauna.config import DataConfig
from fauna.dataset import DatasetError, read_json, read_manifest
from fauna.steps.ingest import IngestResult, ingest_dataset
from fauna.synthetic import SYNTHETIC_MARKER

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
        "source": str(zoo),
        "name": "animals30",
        "synthetic": False,
        "version": result.version,
    }
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
    write_csv(two / "a.csv", ["file", "label"], [["x/1.jpg", "x"]])
    write_csv(two / "b.csv", ["Image_id", "Animal"], [["x/1.jpg", "x"]])
    with pytest.raises(DatasetError, match="ambiguous dataset layout.*a.csv, b.csv"):
        ingest_dataset(str(two), tmp_path / "o1", cfg())
    # Forcing the layout resolves it.
    assert ingest_dataset(str(two), tmp_path / "o2", cfg(layout="folders", min_images_per_class=1))

    flat = tmp_path / "flat"
    jpeg(flat / "1.jpg")
    write_csv(flat / "other.csv", ["id", "species"], [["1.jpg", "x"]])
    with pytest.raises(DatasetError, match="no dataset layout found.*other.csv has no"):
        ingest_dataset(str(flat), tmp_path / "o3", cfg())
    with pytest.raises(DatasetError, match="no label CSV"):
        ingest_dataset(str(flat), tmp_path / "o4", cfg(layout="csv"))


# -- archives that try to write outside their target -------------------------------------------


def test_unsafe_archive_members_are_refused(tmp_path: Path):
    good = [jpeg_bytes() for _ in range(4)]
    zip_path = tmp_path / "evil.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("cat/1.jpg", good[0])
        zf.writestr("cat/2.jpg", good[1])
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
        assert result.kept == 2
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
    assert first.cache_location == f"s3://{s3}/datasets/animals30/{first.version}"
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
    assert main(["ingest", *argv]) == 2
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
    assert read_json(tmp_path / "o" / "quarantine.json")["quarantined"] == 2

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
    printed = capsys.readouterr().out
    assert "ingested 10 images in 2 classes" in printed
    assert f"report: {out / 'report.txt'}" in printed


@pytest.mark.filterwarnings("ignore:You may be attemping to run a task:RuntimeWarning")
def test_component_runs_under_kfp_local(tmp_path: Path, zoo: Path):
    from kfp import local

    from fauna.components.ingest import ingest
    from fauna.config import Config

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"))
    config = Config().merged({"data": {"source": str(zoo), "max_image_pixels": MAX_PIXELS}})
    task = ingest(config_json=json.dumps(config.to_dict()), source="")
    raw = task.outputs["raw"]
    assert raw.metadata["kept"] == 10 and raw.metadata["num_classes"] == 2
    assert Path(raw.path, "manifest.csv").is_file()
