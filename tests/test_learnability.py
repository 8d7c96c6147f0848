"""Learnability on real images: scanned handwritten digits through the real data steps.

scikit-learn ships `load_digits` (1,797 scanned digits, 8x8, 10 classes): 50 per class
are upscaled and written as PNG and JPEG files, then ingested, preprocessed and split by
the fauna steps. From random weights (`--profile smoke`: weights none), each backbone
must reach test top-1 >= 0.9 within `fauna train --epochs 15`, measured on the saved
model.keras loaded with plain Keras. Minutes each on a CPU: the slow tier.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.training]

PER_CLASS = 50
# The paper's three, and one each of the MobileNet and EfficientNet families.
BACKBONES = {
    "vgg16": 32,
    "resnet50": 32,
    "inceptionv3": 75,  # its minimum input size
    "mobilenetv3small": 32,
    "efficientnetv2b0": 32,
}


def write_digit_files(root: Path, per_class: int, size: int) -> Path:
    """Real scanned digits as image files, one folder per class, half PNG, half JPEG."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for label in range(10):
        folder = root / f"digit{label}"
        folder.mkdir(parents=True)
        for i, index in enumerate(np.flatnonzero(digits.target == label)[:per_class]):
            pixels = (digits.images[index] * (255 / 16)).astype(np.uint8)
            image = Image.fromarray(pixels, "L").resize((size, size), Image.BILINEAR)
            image.convert("RGB").save(folder / f"{index:04d}.{'png' if i % 2 else 'jpg'}")
    return root


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Split datasets of the digits at each input size, made by ingest/preprocess/split."""
    from fauna.cli import main

    root = tmp_path_factory.mktemp("digits")
    files = write_digit_files(root / "files", PER_CLASS, 32)
    assert main(["ingest", "--source", str(files), "--out", str(root / "raw")]) == 0
    splits = {}
    for size in sorted(set(BACKBONES.values())):
        pre, split = root / f"pre{size}", root / f"split{size}"
        size_arg = ["--set", f"preprocess.image_size={size}"]
        assert main(["preprocess", "--raw", str(root / "raw"), "--out", str(pre), *size_arg]) == 0
        assert main(["split", "--data", str(pre), "--out", str(split)]) == 0
        splits[size] = split
    return splits


def plain_keras_top1(model_file: Path, data: Path) -> float:
    import keras

    from fauna.data.input_pipeline import make_dataset

    model = keras.saving.load_model(model_file)
    classes = json.loads((data / "classes.json").read_text())
    size = json.loads((data / "preprocess.json").read_text())["image_size"]
    correct = total = 0
    for images, labels in make_dataset(data / "test", size, len(classes), 64):
        predicted = np.argmax(model.predict(images, verbose=0), axis=1)
        correct += int(np.sum(predicted == np.argmax(labels, axis=1)))
        total += len(predicted)
    return correct / total


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_learns_real_digits_from_scratch_in_15_epochs(
    backbone: str, digits: dict[int, Path], tmp_path: Path, deterministic_ops: None
) -> None:
    from fauna.cli import main

    data, out = digits[BACKBONES[backbone]], tmp_path / backbone
    started = time.monotonic()
    args = ["train", "--data", str(data), "--backbone", backbone, "--out", str(out)]
    assert main([*args, "--epochs", "15", "--profile", "smoke"]) == 0
    seconds = time.monotonic() - started
    info = json.loads((out / "train_info.json").read_text())
    assert info["weights"] == "none" and info["epochs_run"] <= 15
    top1 = plain_keras_top1(out / "model.keras", data)
    curve = [round(h["val_accuracy"], 2) for h in json.loads((out / "history.json").read_text())]
    print(f"\n{backbone}: test top-1 {top1:.3f} after {info['epochs_run']} epochs, {seconds:.0f} s")
    assert top1 >= 0.9, f"{backbone}: test top-1 {top1:.3f}; validation by epoch {curve}"
