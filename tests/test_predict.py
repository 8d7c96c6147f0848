"""predict: top-3 species for real image files with a model saved as the train step saves it.

The model is test_evaluate's tiny Keras model (trained here in seconds), so these tests
check predict itself, not how well a training recipe learns.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_evaluate import CLASSES, make_dataset_dir, make_model_dir

from fauna.data.synthetic import class_image

NUM_CLASSES, SIZE = len(CLASSES), 32


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("predict")
    data = make_dataset_dir(root / "data", seed=3)
    return make_model_dir(root / "model", data, "tiny", epochs=20, lr=1e-2)


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


@pytest.mark.training
def test_top3_per_image_and_a_clear_error_per_bad_file(
    model_dir: Path, images: dict[str, Path]
) -> None:
    from fauna.steps.predict import predict_images

    classes = json.loads((model_dir / "classes.json").read_text())
    order = ["class0.jpg", "broken.jpg", "class1.jpg", "missing.jpg", "class2.jpg", "class3.jpg"]
    results = predict_images(model_dir, [images[n] for n in order], top_k=NUM_CLASSES)
    assert [r.path.name for r in results] == order
    by_name = {r.path.name: r for r in results}
    assert "cannot read image" in by_name["broken.jpg"].error
    assert "cannot read image" in by_name["missing.jpg"].error
    for index in range(NUM_CLASSES):
        result = by_name[f"class{index}.jpg"]
        assert result.ok and len(result.top) == NUM_CLASSES
        probs = [p for _, p in result.top]
        assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-4
        assert {label for label, _ in result.top} == set(classes)
        assert result.top[0][0] == classes[index]  # the trained model gets them right


@pytest.mark.training
def test_prepared_pixels_are_what_training_saw(model_dir: Path, images: dict[str, Path]) -> None:
    """Same resize, EXIF orientation, RGB and JPEG round trip as the preprocess step."""
    import io

    from fauna.data.imaging import transform
    from fauna.data.input_pipeline import decode_image
    from fauna.steps.predict import prepare_image

    pixels = np.asarray(prepare_image(images["sideways.png"], SIZE, "crop", 95))
    assert pixels.shape == (SIZE, SIZE, 3) and pixels.dtype == np.float32
    with Image.open(images["sideways.png"]) as img:
        upright = transform(img, SIZE, "crop")
    buffer = io.BytesIO()
    upright.save(buffer, "JPEG", quality=95, subsampling=0)
    np.testing.assert_array_equal(pixels, np.asarray(decode_image(buffer.getvalue(), SIZE)))


@pytest.mark.training
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
    assert lines[1].strip().startswith("1. killer whale") and lines[1].endswith("%")
    assert f"{bad}: cannot read image" in captured.err and "1 of 2 image(s) failed" in captured.err

    assert main(["predict", "--model", str(model_dir), "--json", str(good)]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["error"] is None and len(record["top"]) == 3


@pytest.mark.training
def test_model_from_s3_and_the_champion(
    s3: str, model_dir: Path, images: dict[str, Path], tmp_path: Path, monkeypatch, capsys
) -> None:
    from fauna.cli import main
    from fauna.store import champion, storage

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
    key = champion.DatasetId.from_folder(model_dir).key
    storage.write_text(champion.pointer_uri(s3, key), json.dumps({"model_uri": uri}))
    assert main(["predict", "--model", "champion", good, *bucket]) == 0
    assert main(["predict", "--model", f"champion:{key}", good, *bucket]) == 0
    capsys.readouterr()

    # A second dataset with a champion: `champion` alone must say which ones there are.
    storage.write_text(champion.pointer_uri(s3, "bears-0badf00d"), json.dumps({"model_uri": uri}))
    assert main(["predict", "--model", "champion", good, *bucket]) == 2
    err = capsys.readouterr().err
    assert "several datasets have a champion" in err and "bears-0badf00d" in err and key in err
    assert err.count("\n") == 1
    assert main(["predict", "--model", "champion:bears", good, *bucket]) == 0
    assert main(["predict", "--model", "champion:wolves", good, *bucket]) == 2
    assert "dataset 'wolves' has no champion" in capsys.readouterr().err


def test_champion_in_a_missing_bucket_says_the_bucket_is_missing(
    s3: str, images: dict[str, Path], capsys
) -> None:
    from fauna.cli import main

    args = ["predict", "--model", "champion", str(images["class0.jpg"])]
    assert main([*args, "--set", f"pipeline.bucket={s3}-missing"]) == 2
    err = capsys.readouterr().err
    assert f"bucket does not exist: s3://{s3}-missing" in err and "no champion" not in err


@pytest.mark.training
def test_predict_through_s3_faults(
    faulty_s3, model_dir: Path, images: dict[str, Path], tmp_path: Path, monkeypatch, capsys
) -> None:
    """Every 3rd request answered 503 or dropped: predict still finds and loads the champion;
    an endpoint that never answers is a one-line error within the configured deadline."""
    import time

    from faults import DROP, SLOW_DOWN, STALL

    from fauna.cli import main
    from fauna.store import champion, storage

    monkeypatch.setenv("FAUNA_CACHE_DIR", str(tmp_path / "cache"))
    uri = faulty_s3.uri("runs/r1/models/vgg16").rstrip("/")
    storage.upload_dir(model_dir, uri)
    key = champion.DatasetId.from_folder(model_dir).key
    storage.write_text(champion.pointer_uri(faulty_s3.bucket, key), json.dumps({"model_uri": uri}))
    args = ["predict", "--model", "champion", str(images["class1.jpg"]), "--json"]
    args += ["--set", f"pipeline.bucket={faulty_s3.bucket}"]
    proxy = faulty_s3.proxy
    for fault in (SLOW_DOWN, DROP):
        proxy.reset().fail_every(3, fault)
        faults, requests = proxy.faults, proxy.requests
        shutil.rmtree(tmp_path / "cache", ignore_errors=True)
        assert main(args) == 0, capsys.readouterr().err
        assert json.loads(capsys.readouterr().out)["error"] is None
        assert proxy.faults > faults
        with capsys.disabled():
            print(f"predict: {fault} on {proxy.faults - faults} of {proxy.requests - requests}")

    monkeypatch.setenv(storage.TIMEOUT_ENV, "2")
    faulty_s3.proxy.reset().always(STALL)
    started = time.monotonic()
    assert main(args) == 75  # a transient failure: retry (fauna.errors.EXIT_TRANSIENT)
    elapsed = time.monotonic() - started
    assert elapsed < 30
    with capsys.disabled():
        print(f"predict: endpoint stalled, failed in {elapsed:.1f} s (deadline 2 s)")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "S3 endpoint" in err, err


def test_not_a_model_folder_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    from fauna.cli import main

    image = tmp_path / "x.jpg"
    Image.new("RGB", (40, 40)).save(image)
    assert main(["predict", "--model", str(tmp_path), str(image)]) == 2
    assert "not a trained model folder (no model.keras)" in capsys.readouterr().err


@pytest.mark.training
@pytest.mark.parametrize("broken", ["nan", "constant"])
def test_a_model_that_diverged_or_collapsed_is_named_before_the_answers(
    broken: str, model_dir: Path, images: dict[str, Path], tmp_path: Path, capsys
) -> None:
    """A NaN model (what lr 1000 left) or one answering the same for everything: one
    warning line on stderr before the answers; a healthy model gets none."""
    from fauna.cli import main
    from fauna.model.artifact import load_model

    copy = tmp_path / broken
    shutil.copytree(model_dir, copy)
    model = load_model(copy)
    layer = model.get_layer("predictions")
    kernel, bias = layer.get_weights()
    if broken == "nan":
        kernel[0, 0] = np.nan
    else:  # what a collapsed head does: the input no longer matters
        kernel[:] = 0.0
        bias[:] = [0.0, 9.0, 0.0, 0.0]
    layer.set_weights([kernel, bias])
    model.save(copy / "model.keras")

    code = main(["predict", "--model", str(copy), str(images["class0.jpg"])])
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "warning" in line]
    assert code == 0 and len(warnings) == 1, captured.err
    expected = (
        "not finite (NaN): it diverged" if broken == "nan" else "answers german shepherd (99.9"
    )
    assert expected in warnings[0] and "these answers mean nothing" in warnings[0]
    assert captured.out.splitlines()[0] == str(images["class0.jpg"])  # the answers follow

    assert main(["predict", "--model", str(model_dir), str(images["class0.jpg"])]) == 0
    assert "warning" not in capsys.readouterr().err
