"""`fauna serve`: a real KServe ModelServer in a subprocess on 127.0.0.1, the embedded S3.

The served model is the champion of the embedded S3 bucket (test_evaluate's tiny Keras
model, trained here in seconds): answers must equal `fauna predict`'s on the same files,
over V1 (base64 instances, raw body) and V2 (BYTES), bad requests get 4xx with one line
and leave the server up, and moving the champion pointer changes the served model while
requests keep being answered.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image
from test_evaluate import CLASSES, make_dataset_dir, make_model_dir

from fauna.data.synthetic import class_image

pytest.importorskip("kserve")

NAME = "animals"
MAX_PIXELS = 1_000_000
MAX_BYTES = 300_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request(url: str, body: bytes | None = None, content_type: str = "application/json"):
    """(status, parsed JSON or text) of one HTTP request; errors are answers too."""
    req = urllib.request.Request(url, data=body, method="GET" if body is None else "POST")
    req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            status, text = resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def v1_body(files: list[Path]) -> bytes:
    instances = [{"b64": base64.b64encode(f.read_bytes()).decode()} for f in files]
    return json.dumps({"instances": instances}).encode()


def v2_body(files: list[Path]) -> bytes:
    data = [base64.b64encode(f.read_bytes()).decode() for f in files]
    tensor = {"name": "image", "datatype": "BYTES", "shape": [len(data)], "data": data}
    return json.dumps({"inputs": [tensor]}).encode()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two models of the same dataset (so the same champion pointer), trained differently."""
    root = tmp_path_factory.mktemp("serve")
    data = make_dataset_dir(root / "data", seed=3)
    first = make_model_dir(root / "first", data, "tiny", epochs=3, lr=1e-2)
    second = make_model_dir(root / "second", data, "small", epochs=1, lr=3e-3)
    return first, second


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Photo-like JPEGs and an EXIF-rotated PNG with alpha, other sizes than training."""
    root = tmp_path_factory.mktemp("serve-images")
    rng = random.Random(5)
    files = {}
    for index in range(len(CLASSES)):
        path = files[f"class{index}.jpg"] = root / f"class{index}.jpg"
        class_image(index, len(CLASSES), (90 + 20 * index, 70), rng).save(path, quality=90)
    sideways = class_image(2, len(CLASSES), (80, 60), rng).rotate(90, expand=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    files["sideways.png"] = root / "sideways.png"
    sideways.convert("RGBA").save(files["sideways.png"], exif=exif)
    return files


def fauna_predict(model_dir: Path, files: list[Path], capsys) -> list[list[tuple[str, float]]]:
    """What `fauna predict --json` prints for these files."""
    from fauna.cli import main

    capsys.readouterr()
    assert main(["predict", "--model", str(model_dir), "--json", *map(str, files)]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return [[(t["label"], t["probability"]) for t in r["top"]] for r in records]


class Server:
    def __init__(self, url: str, bucket: str, process: subprocess.Popen, log: Path, env) -> None:
        self.url, self.bucket, self.process, self.log = url, bucket, process, log
        self.env = env  # the embedded S3's endpoint and test credentials

    def v1(self, body: bytes, content_type: str = "application/json"):
        return request(f"{self.url}/v1/models/{NAME}:predict", body, content_type)

    def v2(self, body: bytes):
        return request(f"{self.url}/v2/models/{NAME}/infer", body)


@pytest.fixture(scope="module")
def server(s3_server: str, models: tuple[Path, Path], tmp_path_factory) -> Iterator[Server]:
    """`fauna serve --model champion` against a fresh bucket whose champion is models[0]."""
    from fauna.store import champion, storage

    tmp = tmp_path_factory.mktemp("serve-run")
    env = {
        **os.environ,
        "S3_ENDPOINT_URL": s3_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "FAUNA_CACHE_DIR": str(tmp / "cache"),
    }
    bucket = f"serve-{os.getpid()}"
    with pytest.MonkeyPatch.context() as mp:
        for key in ("S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            mp.setenv(key, env[key])
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        storage.ensure_bucket(bucket)
        uri = f"s3://{bucket}/runs/r1/models/tiny"
        storage.upload_dir(models[0], uri)
        key = champion.DatasetId.from_folder(models[0]).key
        storage.write_text(champion.pointer_uri(bucket, key), json.dumps({"model_uri": uri}))
        log = tmp / "serve.log"
        args = ["--max-image-bytes", str(MAX_BYTES), "--max-images", "8"]
        args += ["--set", f"data.max_image_pixels={MAX_PIXELS}"]
        with serving(env, bucket, log, *args) as (url, process):
            yield Server(url, bucket, process, log, env)


@contextmanager
def serving(env: dict[str, str], bucket: str, log: Path, *args: str) -> Iterator[tuple]:
    """`fauna serve` of the bucket's champion (polled every 0.5 s) on a free port, until it
    answers ready: yields (its URL, the process); stops it afterwards."""
    port = _free_port()
    command = [sys.executable, "-m", "fauna.cli", "serve", "--name", NAME]
    command += ["--http-port", str(port), "--poll-seconds", "0.5"]
    command += ["--set", f"pipeline.bucket={bucket}", *args]
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if request(f"{url}/v1/models/{NAME}")[0] == 200:
                    break
            except OSError:  # not listening yet: the model loads first
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        yield url, process
    finally:
        process.terminate()
        process.wait(30)


@pytest.mark.training
def test_v1_and_v2_answers_equal_fauna_predict(server: Server, models, images, capsys) -> None:
    files = list(images.values())
    expected = fauna_predict(models[0], files, capsys)
    # KServe's readiness: V1 GET /v1/models/<name>, V2 GET /v2/models/<name>/ready.
    assert request(f"{server.url}/v1/models/{NAME}") == (200, {"name": NAME, "ready": True})
    assert request(f"{server.url}/v2/models/{NAME}/ready")[0] == 200

    status, answer = server.v1(v1_body(files))
    assert status == 200, answer
    assert answer["model_uri"].endswith("runs/r1/models/tiny")
    # Species names as `fauna predict` prints them ("german+shepherd" -> "german shepherd").
    shown = {t["label"]: t["name"] for p in answer["predictions"] for t in p["top"]}
    assert shown == {label: label.replace("+", " ") for label in shown}
    got = [[(t["label"], t["probability"]) for t in p["top"]] for p in answer["predictions"]]
    assert [[label for label, _ in top] for top in got] == [[lb for lb, _ in t] for t in expected]
    for top, want in zip(got, expected, strict=True):
        assert [p for _, p in top] == pytest.approx([p for _, p in want], rel=1e-5, abs=1e-7)

    status, answer = server.v2(v2_body(files))
    assert status == 200, answer
    labels, probs = (o for o in sorted(answer["outputs"], key=lambda o: o["name"]))
    assert labels["name"] == "label" and labels["shape"] == [len(files), 3]
    assert labels["data"] == [label for top in expected for label, _ in top]
    want = [p for top in expected for _, p in top]
    assert probs["datatype"] == "FP32" and probs["data"] == pytest.approx(want, rel=1e-5)

    # One raw image as the body, the way curl --data-binary @photo.jpg sends it.
    status, answer = server.v1(images["class1.jpg"].read_bytes(), "image/jpeg")
    assert status == 200, answer
    assert [t["label"] for t in answer["predictions"][0]["top"]] == [
        label for label, _ in expected[1]
    ]


def _png(size: tuple[int, int], noisy: bool = False) -> bytes:
    image = Image.new("RGB", size, (10, 120, 200))
    if noisy:
        image = Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


BAD_V1 = {
    "empty body": b"",
    "not JSON": b"{",
    "no instances": b'{"inputs": 3}',
    "instances not a list": b'{"instances": {"b64": "aGk="}}',
    "no images": b'{"instances": []}',
    "wrong instance shape": b'{"instances": [[1, 2, 3]]}',
    "not base64": b'{"instances": [{"b64": "***"}]}',
    "not an image": json.dumps({"instances": [{"b64": _b64(b"hello, not a JPEG")}]}).encode(),
    "truncated JPEG": json.dumps({"instances": [{"b64": _b64(b"\xff\xd8\xff\xe0" * 8)}]}).encode(),
    "too many pixels": json.dumps({"instances": [{"b64": _b64(_png((1200, 1000)))}]}).encode(),
    "too many bytes": json.dumps({"instances": [{"b64": _b64(_png((400, 400), True))}]}).encode(),
    "too many images": json.dumps({"instances": [{"b64": _b64(_png((8, 8)))}] * 9}).encode(),
}


def _v2(datatype: str, shape: list[int], data: list) -> bytes:
    tensor = {"name": "image", "datatype": datatype, "shape": shape, "data": data}
    return json.dumps({"inputs": [tensor]}).encode()


BAD_V2 = {
    "empty body": b"",
    "not JSON": b"[",
    "no inputs": b"{}",
    "wrong datatype": _v2("FP32", [3], [1.0, 2.0, 3.0]),
    "wrong shape": _v2("BYTES", [2], [_b64(_png((8, 8)))]),
    "image tensor": _v2("BYTES", [1, 8, 8], [_b64(_png((8, 8)))]),
    "not an image": _v2("BYTES", [1], [_b64(b"GIF? no")]),
    "two inputs": json.dumps(
        {"inputs": [json.loads(_v2("BYTES", [1], ["aGk="]))["inputs"][0]] * 2}
    ).encode(),
}


@pytest.mark.training
def test_bad_requests_get_4xx_with_one_line_and_the_server_stays_up(server: Server, images) -> None:
    answers = {f"v1 {k}": server.v1(body) for k, body in BAD_V1.items()}
    answers |= {f"v2 {k}": server.v2(body) for k, body in BAD_V2.items()}
    answers["v1 raw garbage"] = server.v1(b"\x00\x01garbage", "image/jpeg")
    wrong = {k: a for k, a in answers.items() if not 400 <= a[0] < 500}
    assert wrong == {}
    for what, (_status, body) in answers.items():
        message = body.get("error") or body.get("detail") if isinstance(body, dict) else body
        assert message, what
        text = message if isinstance(message, str) else json.dumps(message)
        assert "\n" not in text and "Traceback" not in text, (what, text)
    assert "decompression bomb" in answers["v1 too many pixels"][1]["error"]
    assert f"> the limit {MAX_BYTES}" in answers["v1 too many bytes"][1]["error"]
    assert "not an image" in answers["v1 not an image"][1]["error"]
    assert "shape must be" in answers["v2 wrong shape"][1]["error"]

    assert server.process.poll() is None
    assert request(f"{server.url}/v1/models/{NAME}")[0] == 200
    assert server.v1(v1_body([images["class0.jpg"]]))[0] == 200
    log = server.log.read_text()
    assert "Traceback" not in log and "refused: image 0: not an image" in log


@pytest.mark.training
def test_a_promotion_is_served_without_dropping_requests(
    server: Server, models, images, capsys
) -> None:
    """Move the champion pointer to another model: the server loads it and answers with it,
    and every request sent meanwhile is answered 200 (by the old model or the new)."""
    from fauna.store import champion, storage

    files = list(images.values())
    expected = fauna_predict(models[1], files, capsys)
    answers: list[tuple[int, str]] = []
    stop = threading.Event()

    def keep_asking() -> None:
        while not stop.is_set():
            status, body = server.v1(v1_body(files[:2]))
            answers.append((status, body.get("model_uri", "") if status == 200 else str(body)))

    with pytest.MonkeyPatch.context() as mp:
        for name in ("S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            mp.setenv(name, server.env[name])
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        uri = f"s3://{server.bucket}/runs/r2/models/small"
        storage.upload_dir(models[1], uri)
        key = champion.DatasetId.from_folder(models[1]).key
        asker = threading.Thread(target=keep_asking)
        asker.start()
        try:
            time.sleep(1)
            storage.write_text(
                champion.pointer_uri(server.bucket, key), json.dumps({"model_uri": uri})
            )
            deadline = time.monotonic() + 120
            while not answers or answers[-1][1] != uri:
                assert time.monotonic() < deadline, server.log.read_text()
                time.sleep(0.2)
            time.sleep(0.5)
        finally:
            stop.set()
            asker.join(60)
    assert {status for status, _ in answers} == {200}, answers
    served = [u for _, u in answers]
    assert served[0].endswith("r1/models/tiny") and served[-1] == uri
    assert served == sorted(served, key=lambda u: u == uri)  # never back to the old one

    status, answer = server.v1(v1_body(files))
    got = [[(t["label"], t["probability"]) for t in p["top"]] for p in answer["predictions"]]
    assert [[label for label, _ in top] for top in got] == [[lb for lb, _ in t] for t in expected]
    assert "now serving" in server.log.read_text()


@pytest.mark.training
def test_a_promotion_to_a_broken_model_keeps_serving_the_current_one(
    s3, models, tmp_path, monkeypatch, caplog
) -> None:
    """Fail closed: a pointer naming nothing loadable is one warning per poll, the current
    model stays; a good pointer afterwards is followed."""
    from fauna.config import Config
    from fauna.serving.predictor import ChampionFollower, load_served
    from fauna.store import champion, storage

    monkeypatch.setenv("FAUNA_CACHE_DIR", str(tmp_path / "cache"))
    cfg = Config().merged({"pipeline": {"bucket": s3}})
    key = champion.DatasetId.from_folder(models[0]).key
    pointer = champion.pointer_uri(s3, key)
    first, second = (f"s3://{s3}/runs/{r}/models/m" for r in ("r1", "r2"))
    storage.upload_dir(models[0], first)
    storage.upload_dir(models[1], second)
    storage.write_text(pointer, json.dumps({"model_uri": first}))
    served = load_served("champion", cfg)
    assert served.source == first
    swapped = []
    follower = ChampionFollower(cfg, key, served.source, swapped.append, 0.1)
    assert follower.check_once() is False  # the pointer names what is served

    storage.write_text(pointer, json.dumps({"model_uri": f"s3://{s3}/runs/gone/models/m"}))
    follower.start()
    try:
        deadline = time.monotonic() + 30
        while "champion poll failed" not in caplog.text:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        follower.stop()
    assert swapped == [] and follower.model_uri == first
    assert f"still serving {first}" in caplog.text and "nothing found under" in caplog.text

    storage.write_text(pointer, json.dumps({"model_uri": second}))
    assert follower.check_once() is True
    assert [s.source for s in swapped] == [second] and follower.check_once() is False


def test_without_kserve_serve_is_one_line() -> None:
    code = (
        "import sys\n"
        "sys.modules['kserve'] = None\n"  # as if the serve extra were not installed
        "from fauna.cli import main\n"
        "sys.exit(main(['serve', '--model', 'somewhere']))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "pip install 'fauna[serve]'" in result.stderr
