from pathlib import Path

import pytest

from fauna import storage
from fauna.storage import StorageError, parse_s3_uri


def test_parse_s3_uri():
    assert parse_s3_uri("s3://bucket/a/b/") == storage.S3Uri("bucket", "a/b")
    assert str(parse_s3_uri("s3://bucket")) == "s3://bucket/"
    for bad in ("bucket/key", "s3://", "s3:///key", "s3://Bad_Bucket/key", "http://x/y"):
        with pytest.raises(StorageError):
            parse_s3_uri(bad)


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


def test_text_roundtrip(s3: str):
    storage.write_text(f"s3://{s3}/x/y.json", '{"a": 1}')
    assert storage.read_text(f"s3://{s3}/x/y.json") == '{"a": 1}'


def test_missing_bucket_is_one_clear_line(s3: str):
    with pytest.raises(StorageError, match="bucket does not exist: s3://no-such-bucket"):
        storage.check_bucket("s3://no-such-bucket/x")
    with pytest.raises(StorageError, match="bucket does not exist"):
        storage.read_text("s3://no-such-bucket/x")


def test_unreachable_endpoint_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    s3 = storage.client()
    s3.meta.config.retries = {"max_attempts": 0}
    with pytest.raises(StorageError, match="cannot reach the S3 endpoint http://127.0.0.1:9"):
        storage.check_bucket("s3://bucket/x", s3=s3)


def test_download_refuses_escaping_keys(s3: str, tmp_path: Path):
    storage.client().put_object(Bucket=s3, Key="p/../../evil.txt", Body=b"x")
    with pytest.raises(StorageError, match="escapes"):
        storage.download_dir(f"s3://{s3}/p", tmp_path / "dst")
