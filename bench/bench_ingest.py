"""Benchmark (not a test): ingest's peak memory against the size of what it is given.

Each case runs `fauna ingest` in a fresh child process and reads that child's own peak
RSS (`os.wait4`), so nothing of this script's memory is counted. The cases:

  - a folder of small JPEGs (the ordinary case), at two sizes;
  - zip bombs: one member of zeros, 64 MiB .. 1 GiB unpacked from 64 kB .. 1 MB;
  - the issue's archive: four 1 GiB members in a ~4 MB tar.gz (refused from the first
    header by the compression ratio; and again with the ratio check lifted, so each
    member is refused by `data.max_file_bytes` and skipped while streaming);
  - an http(s) source that streams without end (cut at `data.max_dataset_bytes`), and one
    that streams zeros (refused from its first bytes: no archive starts that way);
  - 100,000 tiny files (a few bytes each): a folder ingested with the defaults (each file
    opened and quarantined), and a folder and a tar.gz refused by `data.max_files`.

Peak RSS should be flat: the same for every case, whatever the input's size.

    python bench/bench_ingest.py            # all cases (~1 min; archives cached in /tmp)
    python bench/bench_ingest.py --quick    # smaller bombs and folders
    python bench/bench_ingest.py --tiny 20000   # fewer tiny files
"""

from __future__ import annotations

import argparse
import http.server
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zipfile
from pathlib import Path

CACHE = Path(tempfile.gettempdir()) / "fauna-bench-ingest" / "v1"
MIB = 1 << 20


class _Zeros(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def _jpeg(seed: int) -> bytes:
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def folder(count: int) -> Path:
    """`count` small JPEGs in cat/ and dog/ (cached)."""
    root = CACHE / f"folder-{count}"
    if not (root / "READY").is_file():
        shutil.rmtree(root, ignore_errors=True)
        for i in range(count):
            path = root / ("cat" if i % 2 else "dog") / f"{i:06d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_jpeg(i))
        (root / "READY").write_text("")
    return root


def zip_bomb(unpacked: int) -> Path:
    path = CACHE / f"bomb-{unpacked // MIB}MiB.zip"
    if not path.is_file():
        partial = path.with_suffix(".partial")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("cat/a.jpg", _jpeg(1))
            zf.writestr("dog/b.jpg", _jpeg(2))
            with zf.open("dog/bomb.jpg", "w") as fh:
                for _ in range(unpacked // MIB):
                    fh.write(bytes(MIB))
        partial.rename(path)
    return path


def huge_members(count: int, size: int) -> Path:
    path = CACHE / f"huge-{count}x{size // MIB}MiB.tar.gz"
    if not path.is_file():
        partial = path.with_suffix(".partial")
        with tarfile.open(partial, "w:gz", compresslevel=1) as tf:
            for i, label in enumerate(("cat", "cat", "dog", "dog")):
                data = _jpeg(10 + i)
                info = tarfile.TarInfo(f"{label}/{i}.jpg")
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            for i in range(count):
                info = tarfile.TarInfo(f"dog/huge{i}.jpg")
                info.size = size
                tf.addfile(info, io.BufferedReader(_Zeros(size)))
        partial.rename(path)
    return path


def tiny_files(count: int) -> Path:
    """`count` tiny files (a few bytes each, named .jpg, so each is opened and checked)."""
    root = CACHE / f"tiny-{count}"
    if not (root / "READY").is_file():
        shutil.rmtree(root, ignore_errors=True)
        for label in ("cat", "dog"):
            (root / label).mkdir(parents=True)
        for i in range(count):
            (root / ("cat" if i % 2 else "dog") / f"{i:06d}.jpg").write_bytes(b"tiny")
        (root / "READY").write_text("")
    return root


def tiny_tar(count: int) -> Path:
    path = CACHE / f"tiny-{count}.tar.gz"
    if not path.is_file():
        partial = path.with_suffix(".partial")
        with tarfile.open(partial, "w:gz", compresslevel=1) as tf:
            tf.add(tiny_files(count), arcname="tiny")
        partial.rename(path)
    return path


class _Endless(http.server.BaseHTTPRequestHandler):
    """Zeros without a Content-Length (after a zip's magic number with /data.zip?zip);
    bounded: it stops by itself after 64 GiB."""

    def do_GET(self):  # noqa: N802 - the stdlib's name
        self.send_response(200)
        self.end_headers()
        chunk = bytes(MIB)
        try:
            if self.path.endswith("?zip"):
                self.wfile.write(b"PK\x03\x04")
            for _ in range(64 * 1024):
                self.wfile.write(chunk)
        except OSError:
            pass

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        pass


def endless_server() -> tuple[str, http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Endless)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/data.zip", server


def measure(source: str, *sets: str) -> tuple[str, float, float]:
    """(outcome, seconds, peak RSS MiB) of `fauna ingest` from `source` in a child process."""
    with tempfile.TemporaryDirectory(prefix="fauna-bench-ingest-") as work:
        argv = [sys.executable, "-m", "fauna.cli", "ingest", "--source", source]
        argv += ["--out", str(Path(work) / "raw"), "-q"]
        for item in sets:
            argv += ["--set", item]
        logs = Path(work) / "stdout", Path(work) / "stderr"
        started = time.monotonic()
        with logs[0].open("w") as out, logs[1].open("w") as err:
            child = subprocess.Popen(argv, stdout=out, stderr=err)
            _, status, usage = os.wait4(child.pid, 0)  # this child's own peak RSS
        child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - started
        printed, errors = logs[0].read_text(), logs[1].read_text()
    if child.returncode == 0:
        kept = next((line for line in printed.splitlines() if line.startswith("ingested")), "ok")
        outcome = kept.split(" from ")[0]
    else:
        outcome = "refused: " + errors.strip().splitlines()[-1].split("error: ", 1)[-1]
    return outcome, seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller inputs")
    parser.add_argument("--tiny", type=int, default=100_000, help="tiny files for those cases")
    args = parser.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    gib = 1 << 30
    bombs = [64 * MIB, 256 * MIB] if args.quick else [64 * MIB, 256 * MIB, gib]
    member = 256 * MIB if args.quick else gib
    folders = [200, 1000] if args.quick else [200, 2000]
    cases: list[tuple[str, str, int, tuple[str, ...]]] = []
    for count in folders:
        path = folder(count)
        size = sum(p.stat().st_size for p in path.rglob("*.jpg"))
        cases.append((f"folder of {count} JPEGs", str(path), size, ()))
    for unpacked in bombs:
        path = zip_bomb(unpacked)
        cases.append((f"zip bomb -> {unpacked // MIB} MiB", str(path), path.stat().st_size, ()))
    huge = huge_members(4, member)
    label = f"tar.gz, 4 x {member // MIB} MiB members"
    cases.append((label, str(huge), huge.stat().st_size, ()))
    lifted = ("data.max_compression_ratio=1000000000",)
    cases.append((label + " (ratio check off)", str(huge), huge.stat().st_size, lifted))
    url, server = endless_server()
    for limit in (100 * MIB, 1000 * MIB):
        cut = (f"data.max_dataset_bytes={limit}",)
        cases.append((f"endless http zip stream, limit {limit // MIB} MiB", f"{url}?zip", 0, cut))
    cases.append(("endless http stream of zeros, default limits", url, 0, ()))
    tiny = args.tiny
    path = tiny_files(tiny)
    cases.append((f"folder of {tiny} tiny files", str(path), 4 * tiny, ()))
    few = (f"data.max_files={tiny // 2}",)
    cases.append((f"folder of {tiny} tiny files, max_files {tiny // 2}", str(path), 4 * tiny, few))
    archive = tiny_tar(tiny)
    label = f"tar.gz of {tiny} tiny files, max_files {tiny // 2}"
    cases.append((label, str(archive), archive.stat().st_size, few))

    print(f"{'input':48s} {'input bytes':>12s} {'seconds':>8s} {'peak RSS':>9s}  outcome")
    try:
        for name, source, size, sets in cases:
            outcome, seconds, peak = measure(source, *sets)
            shown = f"{size:12d}" if size else f"{'endless':>12s}"
            print(f"{name:48s} {shown} {seconds:8.1f} {peak:6.0f} MiB  {outcome[:110]}")
    finally:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    main()
