"""Benchmark (not a test): `fauna serve` requests/s and latency on 127.0.0.1.

A ResNet50 classifier at 128 px (random weights: speed does not depend on their values),
saved like a train step output, is served by a real `fauna serve` subprocess (KServe's
ModelServer), with batching off (--max-batch 1) and on (--max-batch 16, up to 5 ms wait).
1, 4 and 16 concurrent clients each send V1 requests of one photo-sized JPEG (base64)
back to back over a kept-alive connection for --seconds; the figures are requests/s and
the p50/p99 latency seen by the clients.

    python bench/bench_serve.py                      # about 2 minutes on 2 cores
    python bench/bench_serve.py --seconds 5 --clients 1 4 --json out.json
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CACHE = Path(tempfile.gettempdir()) / "fauna-bench-serve"
NAME = "bench"
MODES = {"off": ["--max-batch", "1"], "on": ["--max-batch", "16", "--max-latency-ms", "5"]}


def make_model(backbone: str, image_size: int) -> Path:
    """A train-step-shaped model folder (cached): model.keras and its JSON files."""
    from fauna.config import PAPER_CLASSES, Config
    from fauna.model.network import build_model

    folder = CACHE / f"{backbone}-{image_size}"
    if (folder / "model.keras").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    cfg = Config()
    classes = list(PAPER_CLASSES)
    model = build_model(backbone, image_size, len(classes), cfg.train.for_backbone(backbone))
    model.save(folder / "model.keras.tmp.keras")
    (folder / "classes.json").write_text(json.dumps(classes))
    info = {"image_size": image_size, "mode": "crop", "jpeg_quality": 95}
    (folder / "preprocess.json").write_text(json.dumps(info))
    (folder / "source.json").write_text(json.dumps({"name": "bench", "synthetic": True}))
    (folder / "model.keras.tmp.keras").replace(folder / "model.keras")
    return folder


def photos(count: int) -> list[bytes]:
    """Photo-sized JPEGs (640x480), as a phone app would send them."""
    from fauna.data.synthetic import class_image

    rng = random.Random(0)
    out = []
    for i in range(count):
        buffer = io.BytesIO()
        class_image(i % 30, 30, (640, 480), rng).save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: Path, mode: str, port: int, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "fauna.cli", "serve", "--model", str(model)]
    command += ["--name", NAME, "--http-port", str(port), *MODES[mode]]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"fauna serve exited: see {log}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", f"/v1/models/{NAME}")
            if conn.getresponse().status == 200:
                return process
        except OSError:
            pass
        time.sleep(0.5)
    process.terminate()
    raise SystemExit(f"fauna serve did not get ready in 300 s: see {log}")


def client(port: int, bodies: list[bytes], until: float, latencies: list[float]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Content-Type": "application/json"}
    i = 0
    while time.monotonic() < until:
        started = time.perf_counter()
        conn.request("POST", f"/v1/models/{NAME}:predict", bodies[i % len(bodies)], headers)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit(f"HTTP {response.status}")
        latencies.append(time.perf_counter() - started)
        i += 1


def measure(port: int, bodies: list[bytes], clients: int, seconds: float) -> dict:
    per_client: list[list[float]] = [[] for _ in range(clients)]
    start = time.monotonic()
    until = start + seconds
    threads = [
        threading.Thread(target=client, args=(port, bodies[c:] + bodies[:c], until, per_client[c]))
        for c in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - start
    latencies = sorted(x for lat in per_client for x in lat)

    def pct(q: float) -> float:
        return 1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    return {
        "clients": clients,
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    model = make_model(args.backbone, args.image_size)
    bodies = [
        json.dumps({"instances": [{"b64": base64.b64encode(p).decode()}]}).encode()
        for p in photos(16)
    ]
    rows = []
    for mode in MODES:
        port = free_port()
        log = CACHE / f"serve-{mode}.log"
        process = start_server(model, mode, port, log)
        try:
            measure(port, bodies, 2, 3.0)  # warm-up: first calls, thread pools
            for clients in args.clients:
                row = {"batching": mode, **measure(port, bodies, clients, args.seconds)}
                rows.append(row)
                print(
                    f"batching {mode:>3}  clients {clients:>2}  {row['rps']:7.1f} req/s  "
                    f"p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms",
                    flush=True,
                )
        finally:
            process.terminate()
            process.wait(30)
    print(f"\n{args.backbone} at {args.image_size} px, {cpu_model()}, {os.cpu_count()} CPUs")
    print("| batching | clients | requests/s | p50 ms | p99 ms |\n|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['batching']} | {r['clients']} | {r['rps']:.1f} | {r['p50_ms']:.0f} "
            f"| {r['p99_ms']:.0f} |"
        )
    if args.json:
        meta = {"backbone": args.backbone, "image_size": args.image_size, "cpu": cpu_model()}
        args.json.write_text(json.dumps({**meta, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
