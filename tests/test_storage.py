"""The storage layer against the embedded S3 server, directly and through the fault proxy."""

import threading
import time
import uuid
from pathlib import Path

import pytest
from faults import DROP, INTERNAL, LOST_REPLY, SLOW_DOWN, STALL

from fauna.store import storage
from fauna.store.storage import PreconditionFailed, StorageError, parse_s3_uri


def make_tree(root: Path, files: int = 40) -> dict[str, bytes]:
    """Nested files of varied sizes (0 B .. ~200 KiB) with distinct contents."""
    contents = {}
    for i in range(files):
        rel = f"d{i % 4}/sub{i % 3}/f{i:03d}.bin" if i % 5 else f"top{i:03d}.txt"
        data = uuid.UUID(int=i).bytes * (i * i * 8 % 13000)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        contents[rel] = data
    return contents


def read_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_parse_s3_uri():
    assert parse_s3_uri("s3://bucket/a/b/") == storage.S3Uri("bucket", "a/b")
    assert str(parse_s3_uri("s3://bucket")) == "s3://bucket/"
    for bad in ("bucket/key", "s3://", "s3:///key", "s3://Bad_Bucket/key", "http://x/y"):
        with pytest.raises(StorageError):
            parse_s3_uri(bad)


def test_one_client_per_endpoint_shared_by_threads(s3: str, s3_server: str):
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(storage.client())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(c is storage.client() for c in seen)
    assert storage.client("http://127.0.0.1:9") is not storage.client()
    assert storage.client().meta.endpoint_url == s3_server


def test_upload_download_prefix_roundtrip(s3: str, tmp_path: Path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha")
    (src / "sub" / "b.bin").write_bytes(bytes(range(256)) * 1000)
    assert storage.upload_dir(src, f"s3://{s3}/data/v1") == 2
    keys = sorted(k for k, _ in storage.list_keys(f"s3://{s3}/data/v1"))
    assert keys == ["data/v1/a.txt", "data/v1/sub/b.bin"]
    assert storage.download_dir(f"s3://{s3}/data/v1", tmp_path / "dst") == 2
    assert (tmp_path / "dst" / "sub" / "b.bin").read_bytes() == (src / "sub" / "b.bin").read_bytes()
    assert storage.exists(f"s3://{s3}/data/v1/a.txt")
    assert not storage.exists(f"s3://{s3}/data/v1/missing")
    assert storage.upload_dir(src, f"s3://{s3}/data/v2", exclude=("sub",)) == 1
    assert [k for k, _ in storage.list_keys(f"s3://{s3}/data/v2")] == ["data/v2/a.txt"]
    assert storage.delete_prefix(f"s3://{s3}/data") == 3
    assert list(storage.list_keys(f"s3://{s3}/data")) == []


def test_parallel_tree_roundtrip_is_byte_for_byte(s3: str, tmp_path: Path):
    original = make_tree(tmp_path / "src", files=60)
    (tmp_path / "src" / "skip").mkdir()
    (tmp_path / "src" / "skip" / "x.bin").write_bytes(b"not uploaded")
    uri = f"s3://{s3}/tree"
    assert storage.upload_dir(tmp_path / "src", uri, exclude=("skip",)) == len(original)
    assert storage.download_dir(uri, tmp_path / "dst") == len(original)
    assert read_tree(tmp_path / "dst") == original
    with pytest.raises(StorageError, match=f"nothing found under s3://{s3}/tree/none"):
        storage.download_dir(f"{uri}/none", tmp_path / "empty")


def test_multipart_upload_of_large_file(s3: str, tmp_path: Path, monkeypatch):
    from boto3.s3.transfer import TransferConfig

    monkeypatch.setattr(
        storage,
        "TRANSFER",
        TransferConfig(multipart_threshold=5 * 2**20, multipart_chunksize=5 * 2**20),
    )
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (11 * 2**20))
    storage.upload_file(big, f"s3://{s3}/big.bin")
    head = storage.client().head_object(Bucket=s3, Key="big.bin")
    assert head["ContentLength"] == big.stat().st_size
    assert "-" in head["ETag"]  # multipart ETags carry a part count
    copy = storage.download_file(f"s3://{s3}/big.bin", tmp_path / "copy" / "big.bin")
    assert copy.read_bytes() == big.read_bytes()


def test_text_roundtrip(s3: str):
    storage.write_text(f"s3://{s3}/x/y.json", '{"a": 1}')
    assert storage.read_text(f"s3://{s3}/x/y.json") == '{"a": 1}'


def test_missing_bucket_is_one_clear_line(s3: str, tmp_path: Path):
    (tmp_path / "f.txt").write_text("x")
    calls = {
        "check_bucket": lambda: storage.check_bucket("s3://no-such-bucket/x"),
        "read_text": lambda: storage.read_text("s3://no-such-bucket/x"),
        "read_text_with_etag": lambda: storage.read_text_with_etag("s3://no-such-bucket/x"),
        "exists": lambda: storage.exists("s3://no-such-bucket/x"),
        "download_file": lambda: storage.download_file("s3://no-such-bucket/x", tmp_path / "y"),
        "upload_file": lambda: storage.upload_file(tmp_path / "f.txt", "s3://no-such-bucket/x"),
        "upload_dir": lambda: storage.upload_dir(tmp_path, "s3://no-such-bucket/d"),
        "check_access": lambda: storage.check_access("s3://no-such-bucket/d", write=True),
    }
    for name, call in calls.items():
        with pytest.raises(StorageError) as info:
            call()
        assert str(info.value) == "bucket does not exist: s3://no-such-bucket", name


def test_missing_object_names_the_key(s3: str, tmp_path: Path):
    with pytest.raises(StorageError, match=f"^no such object: s3://{s3}/a/missing.json$"):
        storage.read_text(f"s3://{s3}/a/missing.json")
    with pytest.raises(StorageError, match=f"^no such object: s3://{s3}/a/missing.bin$"):
        storage.download_file(f"s3://{s3}/a/missing.bin", tmp_path / "m.bin")
    assert not (tmp_path / "m.bin").exists()


def test_unreachable_endpoint_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv(storage.TIMEOUT_ENV, "2")
    started = time.monotonic()
    with pytest.raises(StorageError, match="cannot reach the S3 endpoint http://127.0.0.1:9") as e:
        storage.check_bucket("s3://bucket/x")
    assert time.monotonic() - started < 6
    assert "\n" not in str(e.value)


def test_bad_timeout_setting_is_one_line(monkeypatch):
    monkeypatch.setenv(storage.TIMEOUT_ENV, "soon")
    with pytest.raises(StorageError, match="FAUNA_S3_TIMEOUT_SECONDS must be a positive number"):
        storage.client()


def test_download_refuses_escaping_keys_before_writing(s3: str, tmp_path: Path):
    storage.write_text(f"s3://{s3}/p/a-fine-file.txt", "fine")
    storage.client().put_object(Bucket=s3, Key="p/../../evil.txt", Body=b"x")
    with pytest.raises(StorageError, match="escapes"):
        storage.download_dir(f"s3://{s3}/p", tmp_path / "dst")
    assert not list(tmp_path.rglob("*.txt"))


def test_check_access(s3: str):
    storage.check_access(f"s3://{s3}/models", write=False)
    storage.check_access(f"s3://{s3}/models", write=True)
    assert list(storage.list_keys(f"s3://{s3}/models")) == []  # the probe is gone


# -- conditional writes --------------------------------------------------------------------


def test_conditional_writes(s3: str):
    uri = f"s3://{s3}/models/champion.json"
    assert storage.read_text_with_etag(uri) is None
    first = storage.write_text(uri, "run-1", if_none_match=True)
    with pytest.raises(PreconditionFailed, match=f"conditional write to {uri} refused"):
        storage.write_text(uri, "run-2", if_none_match=True)
    text, etag = storage.read_text_with_etag(uri)
    assert (text, etag) == ("run-1", first)
    second = storage.write_text(uri, "run-3", if_match=etag)
    with pytest.raises(PreconditionFailed):
        storage.write_text(uri, "run-4", if_match=etag)  # stale: run-3 replaced it
    assert storage.read_text_with_etag(uri) == ("run-3", second)
    storage.delete_prefix(f"s3://{s3}/models")
    with pytest.raises(PreconditionFailed, match="deleted since it was read"):
        storage.write_text(uri, "run-5", if_match=second)
    with pytest.raises(ValueError):
        storage.write_text(uri, "x", if_match=second, if_none_match=True)


def _race(write_a, write_b) -> list[str]:
    """Start two writers at the same instant; return the names of those that succeeded."""
    barrier, winners = threading.Barrier(2), []

    def writer(name, write):
        barrier.wait()
        try:
            write()
            winners.append(name)
        except PreconditionFailed:
            pass

    threads = [threading.Thread(target=writer, args=a) for a in (("a", write_a), ("b", write_b))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return winners


@pytest.fixture
def slow_moto_writes(monkeypatch):
    """Widen moto's check-then-write window to 10 ms, so an unlocked server would race."""
    from moto.s3.models import S3Backend

    original = S3Backend.put_object

    def slow_put_object(self, *args, **kwargs):
        time.sleep(0.01)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(S3Backend, "put_object", slow_put_object)


RACES = 50


def test_concurrent_conditional_writers_never_both_win(s3: str, slow_moto_writes):
    pointer = f"s3://{s3}/champion.json"
    storage.write_text(pointer, "start")
    for i in range(RACES):
        fresh = f"s3://{s3}/first/{i}.json"
        winners = _race(
            lambda uri=fresh: storage.write_text(uri, "a", if_none_match=True),
            lambda uri=fresh: storage.write_text(uri, "b", if_none_match=True),
        )
        assert len(winners) == 1, f"race {i}: {winners}"
        assert storage.read_text(fresh) == winners[0]

        _text, etag = storage.read_text_with_etag(pointer)
        winners = _race(
            lambda tag=etag, text=f"a{i}": storage.write_text(pointer, text, if_match=tag),
            lambda tag=etag, text=f"b{i}": storage.write_text(pointer, text, if_match=tag),
        )
        assert len(winners) == 1, f"race {i}: {winners}"
        assert storage.read_text(pointer) == f"{winners[0]}{i}"


# -- faults --------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", [SLOW_DOWN, INTERNAL, DROP])
def test_every_third_request_failing_is_survived(faulty_s3, tmp_path: Path, fault: str):
    proxy = faulty_s3.proxy.fail_every(3, fault)
    original = make_tree(tmp_path / "src", files=12)
    for i in range(5):
        storage.write_text(faulty_s3.uri(f"t/{i}.txt"), f"text {i}")
        assert storage.read_text(faulty_s3.uri(f"t/{i}.txt")) == f"text {i}"
    assert storage.exists(faulty_s3.uri("t/0.txt"))
    assert storage.upload_dir(tmp_path / "src", faulty_s3.uri("tree")) == len(original)
    assert storage.download_dir(faulty_s3.uri("tree"), tmp_path / "dst") == len(original)
    assert read_tree(tmp_path / "dst") == original
    storage.check_access(faulty_s3.uri("tree"), write=True)
    assert storage.delete_prefix(faulty_s3.uri("")) == len(original) + 5
    assert proxy.faults >= proxy.requests // 3 - 1 > 10


def test_multipart_transfer_survives_dropped_parts(faulty_s3, tmp_path: Path, monkeypatch):
    from boto3.s3.transfer import TransferConfig

    small_parts = TransferConfig(multipart_threshold=5 * 2**20, multipart_chunksize=5 * 2**20)
    monkeypatch.setattr(storage, "TRANSFER", small_parts)
    big = tmp_path / "big.bin"
    big.write_bytes(b"".join(uuid.UUID(int=i).bytes for i in range(16 * 2**16)))  # 16 MiB
    faulty_s3.proxy.fail_every(3, DROP)
    storage.upload_file(big, faulty_s3.uri("big.bin"))
    copy = storage.download_file(faulty_s3.uri("big.bin"), tmp_path / "copy.bin")
    assert copy.read_bytes() == big.read_bytes()
    assert faulty_s3.proxy.faults >= 2


def test_failing_parallel_transfers_name_a_key_and_leave_no_partial_file(
    faulty_s3, tmp_path: Path, monkeypatch
):
    monkeypatch.setenv(storage.TIMEOUT_ENV, "1")
    original = make_tree(tmp_path / "src", files=12)
    assert storage.upload_dir(tmp_path / "src", faulty_s3.uri("tree")) == len(original)
    faulty_s3.proxy.only(rf"^GET /{faulty_s3.bucket}/tree/").always(SLOW_DOWN)
    with pytest.raises(StorageError, match=f"kept failing for s3://{faulty_s3.bucket}/tree/"):
        storage.download_dir(faulty_s3.uri("tree"), tmp_path / "dst")
    assert not [p for p in (tmp_path / "dst").rglob("*") if p.is_file()]
    faulty_s3.proxy.reset().only(r"^PUT ").always(INTERNAL)
    with pytest.raises(StorageError, match=f"for s3://{faulty_s3.bucket}/again/"):
        storage.upload_dir(tmp_path / "src", faulty_s3.uri("again"))


def test_stalled_endpoint_fails_within_the_deadline(faulty_s3, monkeypatch):
    monkeypatch.setenv(storage.TIMEOUT_ENV, "2")
    storage.write_text(faulty_s3.uri("a.txt"), "a")
    faulty_s3.proxy.always(STALL)
    for call in (
        lambda: storage.read_text(faulty_s3.uri("a.txt")),
        lambda: storage.write_text(faulty_s3.uri("b.txt"), "b"),
        lambda: storage.exists(faulty_s3.uri("a.txt")),
    ):
        started = time.monotonic()
        with pytest.raises(StorageError, match="no answer from the S3 endpoint") as info:
            call()
        elapsed = time.monotonic() - started
        assert elapsed < 6, f"took {elapsed:.1f} s with a 2 s deadline"
        message = str(info.value)
        assert "\n" not in message and faulty_s3.proxy.endpoint in message
        assert "deadline 2 s" in message and faulty_s3.bucket in message


def test_one_stalled_request_is_retried(faulty_s3, monkeypatch):
    monkeypatch.setenv(storage.TIMEOUT_ENV, "4")  # 1 s read timeout per attempt
    storage.write_text(faulty_s3.uri("a.txt"), "a")
    faulty_s3.proxy.fail_next(1, STALL)
    assert storage.read_text(faulty_s3.uri("a.txt")) == "a"
    assert [action for *_, action in faulty_s3.proxy.history[-2:]] == [STALL, "pass"]


def test_outage_is_never_read_as_missing(faulty_s3, monkeypatch):
    monkeypatch.setenv(storage.TIMEOUT_ENV, "1")
    storage.write_text(faulty_s3.uri("champion.json"), "run-1")
    faulty_s3.proxy.always(SLOW_DOWN)
    for missing_or_not in ("champion.json", "never-written.json"):
        with pytest.raises(StorageError, match="HTTP 503"):
            storage.read_text_with_etag(faulty_s3.uri(missing_or_not))
        with pytest.raises(StorageError, match="HTTP 503"):
            storage.exists(faulty_s3.uri(missing_or_not))
    faulty_s3.proxy.reset()
    assert storage.read_text_with_etag(faulty_s3.uri("never-written.json")) is None


def test_lost_reply_of_a_conditional_write_counts_as_written(faulty_s3):
    uri = faulty_s3.uri("champion.json")
    faulty_s3.proxy.only(r"^PUT ").fail_next(1, LOST_REPLY)
    etag = storage.write_text(uri, "run-1", if_none_match=True)  # landed; the retry gets 412
    assert storage.read_text_with_etag(uri) == ("run-1", etag)
    assert faulty_s3.proxy.faults == 1
    faulty_s3.proxy.fail_next(1, LOST_REPLY)
    with pytest.raises(PreconditionFailed):  # someone else's pointer is not ours
        storage.write_text(uri, "run-2", if_none_match=True)


def test_cut_connection_fails_with_one_line(faulty_s3, monkeypatch):
    monkeypatch.setenv(storage.TIMEOUT_ENV, "2")
    faulty_s3.proxy.cut_after(1)
    storage.write_text(faulty_s3.uri("a.txt"), "a")
    with pytest.raises(StorageError, match=f"for s3://{faulty_s3.bucket}/a.txt") as info:
        storage.read_text(faulty_s3.uri("a.txt"))
    assert "\n" not in str(info.value)


def test_check_access_names_what_cannot_be_written(faulty_s3, monkeypatch):
    monkeypatch.setenv(storage.TIMEOUT_ENV, "2")
    faulty_s3.proxy.only(r"^PUT ").always(INTERNAL)
    storage.check_access(faulty_s3.uri("checkpoints"), write=False)
    with pytest.raises(StorageError, match=f"cannot write under {faulty_s3.uri('checkpoints')}"):
        storage.check_access(faulty_s3.uri("checkpoints"), write=True)


def test_outages_are_transient_and_mistakes_are_not(faulty_s3, monkeypatch):
    """Outages exit 75 (retry: StorageUnavailable); a wrong bucket or key exits 2."""
    from fauna.errors import EXIT_ERROR, EXIT_TRANSIENT, TransientError

    monkeypatch.setenv(storage.TIMEOUT_ENV, "2")
    storage.write_text(faulty_s3.uri("a.txt"), "x")
    for fault in (SLOW_DOWN, INTERNAL, DROP, STALL):
        faulty_s3.proxy.reset().always(fault)
        with pytest.raises(storage.StorageUnavailable) as raised:
            storage.read_text(faulty_s3.uri("a.txt"))
        assert raised.value.exit_code == EXIT_TRANSIENT, fault
    faulty_s3.proxy.reset()
    for uri in ("s3://no-such-bucket-here/a.txt", faulty_s3.uri("missing.txt")):
        with pytest.raises(StorageError) as raised:
            storage.read_text(uri)
        assert not isinstance(raised.value, TransientError)
        assert raised.value.exit_code == EXIT_ERROR
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(storage.StorageUnavailable, match="cannot reach the S3 endpoint"):
        storage.read_text(faulty_s3.uri("a.txt"))
