"""predict: top-3 species for real image files with a model the train step wrote."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_train import make_split_dataset, tiny_config

from fauna.synthetic import class_image

NUM_CLASSES, SIZE = 3, 32


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from fauna.steps.train import train_backbone

    root = tmp_path_factory.mktemp("predict")
    data = make_split_dataset(
        root / "data", NUM_CLASSES, {"train": 12, "val": 3}, size=SIZE, seed=3
    )
    cfg = tiny_config(
        head_epochs=1,
        fine_tune_epochs=3,
        batch_size=8,
        learning_rate=1e-3,
        fine_tune_learning_rate=1e-4,
        fine_tune_layers=-1,
        dense_units=[32],
        dropout=0.2,
    )
    train_backbone(data, root / "model", "vgg16", cfg.train, export=False)
    return root / "model"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Photo-like files of each class (other sizes and aspects than training), plus bad ones."""
    root = tmp_path_factory.mktemp("images")
    rng = random.Random(11)
    files = {}
    for index in range(NUM_CLASSES):
        img = class_image(index, NUM_CLASSES, (96 + 16 * index, 72), rng)
        files[f"class{index}.jpg"] = root / f"class{index}.jpg"
        img.save(files[f"class{index}.jpg"], quality=90)
    # A PNG with alpha, stored sideways with an EXIF orientation tag.
    sideways = class_image(1, NUM_CLASSES, (80, 60), rng).rotate(90, expand=True).convert("RGBA")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display upright
    files["sideways.png"] = root / "sideways.png"
    sideways.save(files["sideways.png"], exif=exif)
    files["broken.jpg"] = root / "broken.jpg"
    files["broken.jpg"].write_bytes(b"this is not a JPEG")
    files["missing.jpg"] = root / "missing.jpg"
    return files


def test_top3_per_image_and_a_clear_error_per_bad_file(
    model_dir: Path, images: dict[str, Path]
) -> None:
    from fauna.steps.predict import predict_images

    classes = json.loads((model_dir / "classes.json").read_text())
    order = ["class0.jpg", "broken.jpg", "class1.jpg", "missing.jpg", "class2.jpg"]
    results = predict_images(model_dir, [images[n] for n in order], top_k=3)
    assert [r.path.name for r in results] == order
    by_name = {r.path.name: r for r in results}
    assert "cannot read image" in by_name["broken.jpg"].error
    assert "cannot read image" in by_name["missing.jpg"].error
    for index in range(NUM_CLASSES):
        result = by_name[f"class{index}.jpg"]
        assert result.ok and len(result.top) == 3
        probs = [p for _, p in result.top]
        assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-4
        assert {label for label, _ in result.top} == set(classes)
        assert result.top[0][0] == classes[index]  # the trained model gets them right


def test_prepared_pixels_are_what_training_saw(model_dir: Path, images: dict[str, Path]) -> None:
    """Same resize, EXIF orientation, RGB and JPEG round trip as the preprocess step."""
    import io

    from fauna.inputs import decode_image
    from fauna.steps.predict import prepare_image
    from fauna.steps.preprocess import transform

    pixels = np.asarray(prepare_image(images["sideways.png"], SIZE, "crop", 95))
    assert pixels.shape == (SIZE, SIZE, 3) and pixels.dtype == np.float32
    with Image.open(images["sideways.png"]) as img:
        upright = transform(img, SIZE, "crop")
    buffer = io.BytesIO()
    upright.save(buffer, "JPEG", quality=95, subsampling=0)
    np.testing.assert_array_equal(pixels, np.asarray(decode_image(buffer.getvalue(), SIZE)))


def test_cli_prints_top3_and_exits_1_when_a_file_failed(
    model_dir: Path, images: dict[str, Path], capsys
) -> None:
    from fauna.cli import main

    good, bad = images["class2.jpg"], images["broken.jpg"]
    code = main(["predict", "--model", str(model_dir), str(good), str(bad)])
    captured = capsys.readouterr()
    assert code == 1
    lines = captured.out.splitlines()
    assert lines[0] == str(good) and len(lines) == 4
    assert lines[1].strip().startswith("1. species c") and lines[1].endswith("%")
    assert f"{bad}: cannot read image" in captured.err and "1 of 2 image(s) failed" in captured.err

    assert main(["predict", "--model", str(model_dir), "--json", str(good)]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["error"] is None and len(record["top"]) == 3


def test_model_from_s3_and_the_champion(
    s3: str, model_dir: Path, images: dict[str, Path], tmp_path: Path, monkeypatch, capsys
) -> None:
    from fauna import storage
    from fauna.cli import main

    monkeypatch.setenv("FAUNA_CACHE_DIR", str(tmp_path / "cache"))
    uri = f"s3://{s3}/runs/r1/models/vgg16"
    storage.upload_dir(model_dir, uri)
    good = str(images["class0.jpg"])
    assert main(["predict", "--model", uri, good]) == 0
    assert capsys.readouterr().out.splitlines()[0] == good
    cached = list((tmp_path / "cache" / "models").iterdir())
    assert len(cached) == 1 and (cached[0] / "model.keras").is_file()
    assert main(["predict", "--model", uri, good]) == 0  # reuses the cached copy
    assert list((tmp_path / "cache" / "models").iterdir()) == cached
    capsys.readouterr()

    bucket = ["--set", f"pipeline.bucket={s3}"]
    assert main(["predict", "--model", "champion", good, *bucket]) == 2
    assert "no champion yet" in capsys.readouterr().err
    storage.write_text(f"s3://{s3}/models/champion/champion.json", json.dumps({"model_uri": uri}))
    assert main(["predict", "--model", "champion", good, *bucket]) == 0


def test_not_a_model_folder_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    from fauna.cli import main

    image = tmp_path / "x.jpg"
    Image.new("RGB", (40, 40)).save(image)
    assert main(["predict", "--model", str(tmp_path), str(image)]) == 2
    assert "not a trained model folder (no model.keras)" in capsys.readouterr().err
