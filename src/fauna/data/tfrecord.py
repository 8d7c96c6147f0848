"""TFRecord files and tf.train.Example records in plain Python: no TensorFlow import.

The data steps (preprocess, split, augment) and evaluate's thumbnails only move records
around; importing TensorFlow for that cost each task seconds of start-up (tens under
load). This module writes and reads the same bytes TensorFlow does:

- the TFRecord framing: length (uint64 LE), its masked CRC32C, the data, the data's
  masked CRC32C (tensorflow/core/lib/io/record_writer.cc);
- an Example whose features are single-value bytes or int64 lists, serialized as
  protobuf's deterministic serializer does (map entries sorted by key; packed int64).

tests/test_tfrecord.py checks both against TensorFlow, byte for byte and both ways.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import google_crc32c

from fauna.errors import FaunaError

_MASK_DELTA = 0xA282EAD8


class TFRecordError(FaunaError):
    """A TFRecord file or an Example record is damaged (or not one)."""


def masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


class Writer:
    """A TFRecord file, written record by record (tf.io.TFRecordWriter's format)."""

    def __init__(self, path: Path | str) -> None:
        self._fh: BinaryIO | None = open(path, "wb")  # noqa: SIM115 (closed by close())

    def write(self, data: bytes) -> None:
        assert self._fh is not None
        header = struct.pack("<Q", len(data))
        self._fh.write(header + struct.pack("<I", masked_crc(header)))
        self._fh.write(data + struct.pack("<I", masked_crc(data)))

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read(path: Path | str) -> Iterator[bytes]:
    """Every record of one TFRecord file, its checksums verified."""
    with open(path, "rb") as fh:
        while header := fh.read(12):
            if len(header) < 12:
                raise TFRecordError(f"{path}: truncated record header")
            (length,), (crc,) = struct.unpack("<Q", header[:8]), struct.unpack("<I", header[8:])
            if masked_crc(header[:8]) != crc:
                raise TFRecordError(f"{path}: corrupted record length")
            body = fh.read(length + 4)
            if len(body) < length + 4:
                raise TFRecordError(f"{path}: truncated record")
            data = body[:length]
            if masked_crc(data) != struct.unpack("<I", body[length:])[0]:
                raise TFRecordError(f"{path}: corrupted record data")
            yield data


# ------------------------------------------------------------------ Example (protobuf)


def _varint(value: int) -> bytes:
    value &= 0xFFFFFFFFFFFFFFFF  # int64: negatives as two's complement, 10 bytes
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_example(features: dict[str, bytes | int]) -> bytes:
    """An Example of single-value features: bytes -> BytesList, int -> Int64List."""
    entries = []
    for key in sorted(features):  # the deterministic serializer's map order
        value = features[key]
        if isinstance(value, bytes):
            feature = _field(1, _field(1, value))  # Feature.bytes_list{value}
        else:
            feature = _field(3, _field(1, _varint(int(value))))  # Int64List, packed
        entries.append(_field(1, _field(1, key.encode()) + _field(2, feature)))
    return _field(1, b"".join(entries))  # Example.features{feature: map}


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise TFRecordError("truncated varint in an Example")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> Iterator[tuple[int, int, bytes | int]]:
    """(number, wire type, value) of each field of one message."""
    pos = 0
    while pos < len(data):
        tag, pos = _read_varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _read_varint(data, pos)
            yield number, wire, value
        elif wire == 2:
            length, pos = _read_varint(data, pos)
            if pos + length > len(data):
                raise TFRecordError("truncated field in an Example")
            yield number, wire, data[pos : pos + length]
            pos += length
        elif wire in (1, 5):  # fixed64 / fixed32: skipped (floats are not used here)
            pos += 8 if wire == 1 else 4
        else:
            raise TFRecordError(f"unsupported wire type {wire} in an Example")


def _first_value(feature: bytes) -> bytes | int | None:
    """The first value of a Feature's bytes_list or int64_list (None if empty)."""
    for kind, _, listed in _fields(feature):
        if not isinstance(listed, bytes):
            continue
        for number, wire, value in _fields(listed):
            if number != 1:
                continue
            if kind == 1 and isinstance(value, bytes):
                return value
            if kind == 3 and wire == 0:  # unpacked int64
                return value - (1 << 64) if value >= 1 << 63 else value
            if kind == 3 and isinstance(value, bytes):  # packed int64
                first, _ = _read_varint(value, 0)
                return first - (1 << 64) if first >= 1 << 63 else first
    return None


def decode_example(data: bytes) -> dict[str, bytes | int | None]:
    """The features of an Example, each as its first value (bytes, or int for int64)."""
    found: dict[str, bytes | int | None] = {}
    for number, _, features in _fields(data):
        if number != 1 or not isinstance(features, bytes):
            continue
        for _, _, entry in _fields(features):
            if not isinstance(entry, bytes):
                continue
            parts = {n: v for n, _, v in _fields(entry)}
            key, feature = parts.get(1, b""), parts.get(2, b"")
            if isinstance(key, bytes) and isinstance(feature, bytes):
                found[key.decode()] = _first_value(feature)
    return found
