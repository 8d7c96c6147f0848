"""Benchmark (not a test): moving many files to and from S3, one at a time vs in parallel.

Prints files/s and MB/s for `storage.upload_dir` / `storage.download_dir` (parallel, one
shared client, boto3's transfer manager) against the previous way (one file after the
other over one client), for many small files and a few large ones:

  - against the embedded S3 server directly (loopback: no network latency at all), and
  - through the fault proxy (tests/faults.py) adding a delay to every request, which is
    what a remote MinIO or AWS S3 looks like; loopback hides the latency parallelism hides.

The server and the proxy run in a separate process, so their work does not share the
benchmark's interpreter lock. `--races` also counts, in fresh processes, how often two
concurrent conditional writers both win on moto with and without fauna's write lock.

    python bench/bench_storage.py                       # 200 x 16 KiB, 4 x 24 MiB, 20 ms
    python bench/bench_storage.py --small 100 --large 2 --latency-ms 50 --races 50
    python bench/bench_storage.py --only-faults --fault-rounds 10 --stall   # reliability

`--fault-rounds N` runs N rounds of every storage call (each result checked) with every
3rd request failing, per kind of fault; `--stall` times one read against an endpoint that
accepts connections and never answers (FAUNA_S3_TIMEOUT_SECONDS, default 60 s).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # faults.py, the fault-injection proxy

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def serve(latency_ms: float) -> None:
    """Child process: the embedded server and a latency proxy; endpoints on stdout."""
    from faults import FaultProxy

    from fauna.store.embedded_s3 import embedded_s3_server

    with embedded_s3_server() as endpoint, FaultProxy(endpoint) as proxy:
        proxy.latency(latency_ms / 1000)
        print(json.dumps({"direct": endpoint, "slow": proxy.endpoint}), flush=True)
        sys.stdin.read()  # until the parent closes our stdin


def make_files(root: Path, count: int, size: int, prefix: str) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = root / f"{prefix}{i // 50:02d}" / f"{prefix}-{i:04d}.bin"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(os.urandom(size))
        paths.append(path)
    return paths


def sequential_upload(local: Path, uri: str) -> int:
    """The previous upload_dir: one file after the other over one client."""
    from fauna.store import storage

    s3, base = storage.client(), storage.parse_s3_uri(uri)
    files = sorted(p for p in local.rglob("*") if p.is_file())
    for path in files:
        key = base.join(path.relative_to(local).as_posix()).key
        s3.upload_file(str(path), base.bucket, key, Config=storage.TRANSFER)
    return len(files)


def sequential_download(uri: str, local: Path) -> int:
    from fauna.store import storage

    s3, base = storage.client(), storage.parse_s3_uri(uri)
    count = 0
    for key, _size in storage.list_keys(uri):
        target = local / key[len(base.key) + 1 :]
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(base.bucket, key, str(target), Config=storage.TRANSFER)
        count += 1
    return count


def timed(func, *args) -> tuple[int, float]:
    started = time.perf_counter()
    count = func(*args)
    return count, time.perf_counter() - started


def measure(endpoint: str, local: Path, label: str, work: Path, repeat: int) -> list[dict]:
    """Best of `repeat` for each direction and way; returns table rows."""
    from fauna.store import storage

    os.environ["S3_ENDPOINT_URL"] = endpoint
    bucket = f"bench-{os.getpid()}-{label}".lower()
    storage.ensure_bucket(bucket)
    size = sum(p.stat().st_size for p in local.rglob("*") if p.is_file())
    best: dict[str, float] = {}
    count = 0
    for run in range(repeat):
        for way, up, down in (
            ("one at a time", sequential_upload, sequential_download),
            ("parallel", storage.upload_dir, storage.download_dir),
        ):
            uri = f"s3://{bucket}/{way.replace(' ', '-')}-{run}"
            count, up_s = timed(up, local, uri)
            target = work / f"{label}-{way.replace(' ', '-')}-{run}"
            _, down_s = timed(down, uri, target)
            shutil.rmtree(target)
            storage.delete_prefix(uri)
            best[f"{way} up"] = min(best.get(f"{way} up", float("inf")), up_s)
            best[f"{way} down"] = min(best.get(f"{way} down", float("inf")), down_s)
    rows = []
    for direction in ("up", "down"):
        seq, par = best[f"one at a time {direction}"], best[f"parallel {direction}"]
        rows.append(
            {
                "case": f"{label}, {'upload' if direction == 'up' else 'download'}",
                "files": count,
                "MiB": size / 2**20,
                "seq": count / seq,
                "par": count / par,
                "seq_mbs": size / 2**20 / seq,
                "par_mbs": size / 2**20 / par,
            }
        )
    return rows


def print_table(rows: list[dict]) -> None:
    print("| case | files | MiB | one at a time files/s (MiB/s) | parallel files/s (MiB/s) | x |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['case']} | {r['files']} | {r['MiB']:.1f} | {r['seq']:.1f} ({r['seq_mbs']:.1f}) "
            f"| {r['par']:.1f} ({r['par_mbs']:.1f}) | {r['par'] / r['seq']:.2f}x |"
        )


# -- operations under injected faults -----------------------------------------------------


def one_round(base: str, local: Path, work: Path, i: int) -> int:
    """Every kind of storage call once, each result checked; returns the operation count."""
    from fauna.store import storage

    text = f"round {i} {time.time_ns()}"
    storage.write_text(f"{base}/texts/{i}.txt", text)
    assert storage.read_text(f"{base}/texts/{i}.txt") == text, "read_text returned other text"
    assert storage.exists(f"{base}/texts/{i}.txt"), "exists said no"
    assert len(list(storage.list_keys(f"{base}/texts"))) == i + 1, "list_keys miscounted"
    current = storage.read_text_with_etag(f"{base}/pointer.json")
    if current is None:
        storage.write_text(f"{base}/pointer.json", text, if_none_match=True)
    else:
        storage.write_text(f"{base}/pointer.json", text, if_match=current[1])
    assert storage.read_text(f"{base}/pointer.json") == text, "pointer not updated"
    files = len(list(local.rglob("*.bin")))
    assert storage.upload_dir(local, f"{base}/tree/{i}") == files
    target = work / f"tree-{i}"
    assert storage.download_dir(f"{base}/tree/{i}", target) == files
    for path in local.rglob("*.bin"):
        assert (target / path.relative_to(local)).read_bytes() == path.read_bytes(), "bytes differ"
    shutil.rmtree(target)
    storage.check_access(base, write=True)
    return 9


def fault_table(rounds: int, work: Path) -> None:
    """Every 3rd request faulted, one kind at a time; all operations must succeed, correctly."""
    import faults

    from fauna.store import storage
    from fauna.store.embedded_s3 import embedded_s3_server

    local = work / "fault-tree"
    make_files(local, 6, 4096, "f")
    print("| fault every 3rd request | requests | faults injected | operations | survived |")
    print("|---|---:|---:|---:|---:|")
    with embedded_s3_server() as endpoint:
        for fault in (faults.SLOW_DOWN, faults.INTERNAL, faults.DROP, faults.LOST_REPLY):
            with faults.FaultProxy(endpoint) as proxy:
                os.environ["S3_ENDPOINT_URL"] = proxy.endpoint
                bucket = f"faults-{fault}"
                storage.ensure_bucket(bucket)
                proxy.fail_every(3, fault)
                done = 0
                for i in range(rounds):
                    done += one_round(f"s3://{bucket}/r", local, work, i)
                print(f"| {fault} | {proxy.requests} | {proxy.faults} | {done} | {done} |")
            storage.clear_clients()


def stall_time(deadline: str | None) -> None:
    """How long one read takes to fail against an endpoint that never answers."""
    import faults

    from fauna.store import storage
    from fauna.store.embedded_s3 import embedded_s3_server

    if deadline:
        os.environ[storage.TIMEOUT_ENV] = deadline
    with embedded_s3_server() as endpoint, faults.FaultProxy(endpoint) as proxy:
        os.environ["S3_ENDPOINT_URL"] = proxy.endpoint
        storage.ensure_bucket("stall")
        proxy.always(faults.STALL)
        started = time.monotonic()
        try:
            storage.read_text("s3://stall/pointer.json")
        except storage.StorageError as exc:
            print(f"stalled endpoint: failed after {time.monotonic() - started:.1f} s: {exc}")
    os.environ.pop(storage.TIMEOUT_ENV, None)


# -- conditional-write races ---------------------------------------------------------------


def race_probe(races: int, locked: bool) -> dict:
    """Child process: two writers per race with If-None-Match and If-Match on moto.

    moto's check-then-write window is widened to 10 ms (a slow disk), so an unlocked
    server shows its race; fauna's embedded server holds a lock around object writes.
    """
    import logging

    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError
    from moto.s3.models import S3Backend
    from moto.server import ThreadedMotoServer

    from fauna.store import embedded_s3

    original = S3Backend.put_object

    def slow_put_object(self, *args, **kwargs):
        time.sleep(0.01)
        return original(self, *args, **kwargs)

    S3Backend.put_object = slow_put_object
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    if locked:
        embedded_s3.make_conditional_writes_atomic()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://{host}:{port}",
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard"}),
    )
    s3.create_bucket(Bucket="races")
    s3.put_object(Bucket="races", Key="pointer", Body=b"0")
    double = {"if_none_match": 0, "if_match": 0, "errors": 0}

    def race(key: str, condition: dict, name: str) -> None:
        barrier, wins = threading.Barrier(2), []

        def writer(n: int) -> None:
            body = f"{key} {name} writer {n} {time.time_ns()}".encode()  # unique: new ETag
            barrier.wait()
            try:
                s3.put_object(Bucket="races", Key=key, Body=body, **condition)
                wins.append(n)
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "PreconditionFailed":
                    double["errors"] += 1

        threads = [threading.Thread(target=writer, args=(n,)) for n in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        double[name] += len(wins) == 2

    for i in range(races):
        race(f"fresh-{i}", {"IfNoneMatch": "*"}, "if_none_match")
        etag = s3.head_object(Bucket="races", Key="pointer")["ETag"]
        race("pointer", {"IfMatch": etag}, "if_match")
    server.stop()
    return double


def run_child(*args: str) -> subprocess.Popen:
    env = {**os.environ, **CREDENTIALS}
    return subprocess.Popen(
        [sys.executable, str(HERE), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=200, help="number of small files")
    parser.add_argument("--small-kib", type=int, default=16)
    parser.add_argument("--large", type=int, default=4, help="number of large files")
    parser.add_argument("--large-mib", type=int, default=24)
    parser.add_argument("--latency-ms", type=float, default=20.0, help="added per request")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (best kept)")
    parser.add_argument("--races", type=int, default=0, help="conditional-write races to run")
    parser.add_argument("--fault-rounds", type=int, default=0, help="rounds per injected fault")
    parser.add_argument(
        "--stall", action="store_true", help="time a read against a stalled endpoint"
    )
    parser.add_argument("--only-faults", action="store_true", help="skip the speed table")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--race-probe", choices=["locked", "unlocked"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.latency_ms)
    if args.race_probe:
        print(json.dumps(race_probe(args.races, args.race_probe == "locked")))
        return None

    os.environ.update(CREDENTIALS)
    import logging

    logging.getLogger("botocore").setLevel(logging.ERROR)
    work = Path(tempfile.mkdtemp(prefix="fauna-bench-storage-"))
    try:
        if not args.only_faults:
            speed_table(args, work)
        if args.fault_rounds:
            fault_table(args.fault_rounds, work)
        if args.stall:
            stall_time(os.environ.get("FAUNA_S3_TIMEOUT_SECONDS"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.races:
        for mode in ("unlocked", "locked"):
            probe = run_child("--race-probe", mode, "--races", str(args.races))
            result = json.loads(probe.communicate()[0])
            print(
                f"conditional-write races on moto, {mode}: both writers won "
                f"{result['if_none_match']}/{args.races} If-None-Match races, "
                f"{result['if_match']}/{args.races} If-Match races "
                f"({result['errors']} other errors)"
            )


def speed_table(args: argparse.Namespace, work: Path) -> None:
    server = run_child("--serve", "--latency-ms", str(args.latency_ms))
    endpoints = json.loads(server.stdout.readline())
    try:
        small = work / "small"
        make_files(small, args.small, args.small_kib * 1024, "s")
        large = work / "large"
        make_files(large, args.large, args.large_mib * 2**20, "l")
        print(f"# {args.small} x {args.small_kib} KiB and {args.large} x {args.large_mib} MiB; ")
        print(f"# best of {args.repeat}; latency {args.latency_ms:g} ms per request via proxy")
        rows = []
        for label, endpoint in (("loopback", endpoints["direct"]), ("latency", endpoints["slow"])):
            rows += measure(endpoint, small, f"{label}-small", work, args.repeat)
            rows += measure(endpoint, large, f"{label}-large", work, args.repeat)
        print_table(rows)
    finally:
        server.stdin.close()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
