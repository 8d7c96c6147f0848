"""The store check: conditional writes proven on the real embedded S3, refused through a
proxy that strips the conditions (a store that accepts the headers and ignores them)."""

from __future__ import annotations

import pytest

from fauna.cli import main
from fauna.errors import EXIT_ERROR, EXIT_TRANSIENT
from fauna.store import champion, storage
from fauna.store import conditional_writes as store_check


def _probes(bucket: str) -> list[str]:
    return [k for k, _ in storage.list_keys(f"s3://{bucket}") if store_check.PROBE_PREFIX in k]


def test_the_embedded_store_passes_and_leaves_no_probe(s3):
    store_check.probe(s3)
    assert _probes(s3) == []


def test_a_store_that_ignores_conditions_is_refused(faulty_s3):
    faulty_s3.proxy.strip_conditions()
    with pytest.raises(store_check.StoreCheckError) as raised:
        store_check.probe(faulty_s3.bucket)
    message = str(raised.value)
    assert faulty_s3.proxy.endpoint in message and f"bucket {faulty_s3.bucket}" in message
    assert '"If-None-Match: *" on an existing key was accepted' in message
    assert "\n" not in message
    assert any(m == "PUT" for m, _, _ in faulty_s3.proxy.history)


def test_checked_once_per_bucket_and_process(faulty_s3):
    store_check.require_conditional_writes(faulty_s3.bucket)
    seen = faulty_s3.proxy.requests
    store_check.require_conditional_writes(faulty_s3.bucket)
    assert faulty_s3.proxy.requests == seen  # the second call asked the store nothing


def test_the_pointer_never_moves_on_such_a_store(faulty_s3):
    faulty_s3.proxy.strip_conditions()
    written = []

    def decide(current):
        return "promote", {"run_id": "r1", "promoted_at": champion.now_stamp()}

    with pytest.raises(store_check.StoreCheckError, match="does not enforce conditional"):
        champion.move_pointer(faulty_s3.bucket, "tiny-0000", decide, written.append)
    assert written == []  # nothing was even prepared for the move
    assert champion.read_pointer(faulty_s3.bucket, "tiny-0000") is None


def test_check_store_command(faulty_s3, capsys):
    assert main(["check-store", f"s3://{faulty_s3.bucket}"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: the store at") and "enforces" in out

    faulty_s3.proxy.strip_conditions()
    assert main(["check-store", f"s3://{faulty_s3.bucket}"]) == EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith("fauna check-store: error: the store at") and "\n" not in err
    assert "does not enforce conditional writes" in err


def test_check_store_on_an_outage_is_transient(faulty_s3, capsys, monkeypatch):
    from faults import SLOW_DOWN

    monkeypatch.setenv(storage.TIMEOUT_ENV, "2")
    faulty_s3.proxy.only("^PUT ").always(SLOW_DOWN)
    assert main(["check-store", f"s3://{faulty_s3.bucket}"]) == EXIT_TRANSIENT
    err = capsys.readouterr().err.strip()
    assert "SlowDown" in err and "\n" not in err
