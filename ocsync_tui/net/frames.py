"""The plaintext frames peers exchange inside secure-channel payloads: one frame per datagram.

Every frame starts with `FRAME_VERSION` and a type byte. Decoding any byte string returns one of the
frame tuples below or raises `FrameError`; a frame that decodes re-encodes to the same bytes (the
encoding is canonical), so a frame cannot carry anything its fields do not show.

Frames that carry a `packet_number` are ack-eliciting and reliable: the transfer core retransmits
what they carry, under a new packet number, until an `Ack` covers it. Numbers count per sender and
session; every transmission gets a fresh one, so an acknowledgement names exactly one transmission.
Byte ranges and packet ranges are half-open `(start, end)` pairs.

Layouts (big-endian):
    Data            v u8 t u8 | packet_number u64 | transfer_id u64 | offset u64 | payload...
    Ack             v t | ack_delay_us u32 | window u64 | count u16 | (start u64, end u64)*count,
                    packet ranges newest first, with a gap between neighbours
    Offer           v t | packet_number | transfer_id | size u64 | sha256 32 | name u8+utf8 |
                    kind u8+utf8 | metadata u16+bytes
    Accept          v t | packet_number | transfer_id | count u16 | (start, end)*count, the byte ranges
                    the receiver already holds, ascending, with a gap between neighbours
    Cancel          v t | packet_number | transfer_id | by_giver u8 (0/1) | code u8 | reason u8+utf8
    Done            v t | packet_number | transfer_id
    UnknownTransfer v t | transfer_id    (not reliable: "I hold no such transfer, offer it again")
    Ping / Pong     v t | nonce u64
    PmtuProbe       v t | probe_id u32 | padding...
    PmtuProbeAck    v t | probe_id u32 | size u32
"""

from __future__ import annotations

import enum
import struct
from typing import NamedTuple

from ocsync_tui.errors import OcsyncError

FRAME_VERSION = 1
MAX_NAME_BYTES = 255
MAX_KIND_BYTES = 64
MAX_METADATA_BYTES = 512
MAX_REASON_BYTES = 200
# Bounds a range list so an Ack or Accept always fits in the smallest frame (1200-byte datagrams).
MAX_RANGES = 64


class FrameError(OcsyncError):
    """The bytes are not a frame this version understands (truncated, unknown type, bad field)."""


class FrameType(enum.IntEnum):
    DATA = 1
    ACK = 2
    OFFER = 3
    ACCEPT = 4
    CANCEL = 5
    DONE = 6
    UNKNOWN_TRANSFER = 7
    PING = 8
    PONG = 9
    PMTU_PROBE = 10
    PMTU_PROBE_ACK = 11


# Which core takes a frame, by its type byte (frame[1]): a peer link routes these two sets to the
# keepalive and path MTU cores and every other frame to the transfer core.
KEEPALIVE_FRAME_TYPES = frozenset({FrameType.PING, FrameType.PONG})
PMTU_FRAME_TYPES = frozenset({FrameType.PMTU_PROBE, FrameType.PMTU_PROBE_ACK})


class CancelCode(enum.IntEnum):
    CANCELLED = 0
    DECLINED = 1
    # The receiver's SHA-256 of the whole did not match the offer.
    VERIFICATION_FAILED = 2


Range = tuple[int, int]


class Data(NamedTuple):
    packet_number: int
    transfer_id: int
    offset: int
    payload: bytes


class Ack(NamedTuple):
    ack_delay: float
    window: int
    ranges: tuple[Range, ...]


class Offer(NamedTuple):
    packet_number: int
    transfer_id: int
    size: int
    sha256: bytes
    name: str
    kind: str
    metadata: bytes


class Accept(NamedTuple):
    packet_number: int
    transfer_id: int
    have: tuple[Range, ...]


class Cancel(NamedTuple):
    packet_number: int
    transfer_id: int
    by_giver: bool
    code: CancelCode
    reason: str


class Done(NamedTuple):
    packet_number: int
    transfer_id: int


class UnknownTransfer(NamedTuple):
    transfer_id: int


class Ping(NamedTuple):
    nonce: int


class Pong(NamedTuple):
    nonce: int


class PmtuProbe(NamedTuple):
    probe_id: int
    size: int


class PmtuProbeAck(NamedTuple):
    probe_id: int
    size: int


Frame = Data | Ack | Offer | Accept | Cancel | Done | UnknownTransfer | Ping | Pong | PmtuProbe | PmtuProbeAck

DATA_HEADER = struct.Struct("!BBQQQ")
_ACK_HEADER = struct.Struct("!BBIQH")
_RANGE = struct.Struct("!QQ")
_NUMBERED = struct.Struct("!BBQQ")
_OFFER_FIXED = struct.Struct("!BBQQQ32s")
_CANCEL_FIXED = struct.Struct("!BBQQBB")
_TRANSFER_ONLY = struct.Struct("!BBQ")
_NONCE = struct.Struct("!BBQ")
_PROBE = struct.Struct("!BBI")
_PROBE_ACK = struct.Struct("!BBII")
_U8 = struct.Struct("!B")
_U16 = struct.Struct("!H")
_U64_MAX = (1 << 64) - 1

DATA_OVERHEAD = DATA_HEADER.size
PMTU_PROBE_MIN_SIZE = _PROBE.size


def encode_data_header(packet_number: int, transfer_id: int, offset: int) -> bytes:
    return DATA_HEADER.pack(FRAME_VERSION, FrameType.DATA, packet_number, transfer_id, offset)


def encode_data(packet_number: int, transfer_id: int, offset: int, payload: bytes) -> bytes:
    return encode_data_header(packet_number, transfer_id, offset) + payload


def encode_ack(ack_delay: float, window: int, ranges: tuple[Range, ...] | list[Range]) -> bytes:
    """`ranges` newest first; at most MAX_RANGES are encoded (the oldest are left out)."""
    ranges = ranges[:MAX_RANGES]
    delay_us = min(max(round(ack_delay * 1_000_000), 0), 0xFFFFFFFF)
    parts = [_ACK_HEADER.pack(FRAME_VERSION, FrameType.ACK, delay_us, min(window, _U64_MAX), len(ranges))]
    parts.extend(_RANGE.pack(start, end) for start, end in ranges)
    return b"".join(parts)


def _short_text(text: str, limit: int) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > limit:
        raise ValueError(f"text longer than {limit} bytes: {text[:40]!r}")
    return _U8.pack(len(raw)) + raw


def encode_offer(
    packet_number: int, transfer_id: int, size: int, sha256: bytes, name: str, kind: str, metadata: bytes
) -> bytes:
    if len(sha256) != 32:
        raise ValueError("sha256 must be 32 bytes")
    if len(metadata) > MAX_METADATA_BYTES:
        raise ValueError(f"offer metadata is limited to {MAX_METADATA_BYTES} bytes")
    return b"".join(
        (
            _OFFER_FIXED.pack(FRAME_VERSION, FrameType.OFFER, packet_number, transfer_id, size, sha256),
            _short_text(name, MAX_NAME_BYTES),
            _short_text(kind, MAX_KIND_BYTES),
            _U16.pack(len(metadata)),
            metadata,
        )
    )


def encode_accept(packet_number: int, transfer_id: int, have: tuple[Range, ...] | list[Range]) -> bytes:
    """`have` ascending; only the first MAX_RANGES are sent (the giver then re-sends a little more)."""
    have = have[:MAX_RANGES]
    parts = [_NUMBERED.pack(FRAME_VERSION, FrameType.ACCEPT, packet_number, transfer_id), _U16.pack(len(have))]
    parts.extend(_RANGE.pack(start, end) for start, end in have)
    return b"".join(parts)


def encode_cancel(
    packet_number: int, transfer_id: int, by_giver: bool, code: CancelCode, reason: str
) -> bytes:
    # Reasons are for people; a long one is cut (on a character boundary) rather than refused.
    reason_bytes = reason.encode("utf-8")[:MAX_REASON_BYTES].decode("utf-8", "ignore").encode("utf-8")
    return (
        _CANCEL_FIXED.pack(FRAME_VERSION, FrameType.CANCEL, packet_number, transfer_id, int(by_giver), code)
        + _U8.pack(len(reason_bytes))
        + reason_bytes
    )


def encode_done(packet_number: int, transfer_id: int) -> bytes:
    return _NUMBERED.pack(FRAME_VERSION, FrameType.DONE, packet_number, transfer_id)


def encode_unknown_transfer(transfer_id: int) -> bytes:
    return _TRANSFER_ONLY.pack(FRAME_VERSION, FrameType.UNKNOWN_TRANSFER, transfer_id)


def encode_ping(nonce: int) -> bytes:
    return _NONCE.pack(FRAME_VERSION, FrameType.PING, nonce)


def encode_pong(nonce: int) -> bytes:
    return _NONCE.pack(FRAME_VERSION, FrameType.PONG, nonce)


def encode_pmtu_probe(probe_id: int, size: int) -> bytes:
    """A probe frame of exactly `size` bytes (zero padding after the header)."""
    if size < _PROBE.size:
        raise ValueError(f"a probe frame is at least {_PROBE.size} bytes")
    return _PROBE.pack(FRAME_VERSION, FrameType.PMTU_PROBE, probe_id) + bytes(size - _PROBE.size)


def encode_pmtu_probe_ack(probe_id: int, size: int) -> bytes:
    return _PROBE_ACK.pack(FRAME_VERSION, FrameType.PMTU_PROBE_ACK, probe_id, size)


def encode(frame: Frame) -> bytes:
    """Encode any frame tuple (the per-type functions above avoid building the tuple first)."""
    match frame:
        case Data(packet_number, transfer_id, offset, payload):
            return encode_data(packet_number, transfer_id, offset, payload)
        case Ack(ack_delay, window, ranges):
            return encode_ack(ack_delay, window, ranges)
        case Offer(packet_number, transfer_id, size, sha256, name, kind, metadata):
            return encode_offer(packet_number, transfer_id, size, sha256, name, kind, metadata)
        case Accept(packet_number, transfer_id, have):
            return encode_accept(packet_number, transfer_id, have)
        case Cancel(packet_number, transfer_id, by_giver, code, reason):
            return encode_cancel(packet_number, transfer_id, by_giver, code, reason)
        case Done(packet_number, transfer_id):
            return encode_done(packet_number, transfer_id)
        case UnknownTransfer(transfer_id):
            return encode_unknown_transfer(transfer_id)
        case Ping(nonce):
            return encode_ping(nonce)
        case Pong(nonce):
            return encode_pong(nonce)
        case PmtuProbe(probe_id, size):
            return encode_pmtu_probe(probe_id, size)
        case PmtuProbeAck(probe_id, size):
            return encode_pmtu_probe_ack(probe_id, size)
    raise TypeError(f"not a frame: {frame!r}")


def decode(data: bytes) -> Frame:
    """Return the frame `data` holds, or raise FrameError."""
    if len(data) < 2:
        raise FrameError("frame shorter than its header")
    version, frame_type = data[0], data[1]
    if version != FRAME_VERSION:
        raise FrameError(f"frame version {version} is not supported (this side speaks {FRAME_VERSION})")
    decoder = _DECODERS.get(frame_type)
    if decoder is None:
        raise FrameError(f"unknown frame type {frame_type}")
    try:
        return decoder(data)
    except struct.error as error:
        raise FrameError(f"frame of type {frame_type} is truncated or too long") from error


def _decode_data(data: bytes) -> Data:
    _, _, packet_number, transfer_id, offset = DATA_HEADER.unpack_from(data)
    payload = memoryview(data)[DATA_HEADER.size :]  # a copy per datagram costs more than decrypting it
    if not payload:
        raise FrameError("data frame without payload")
    if offset + len(payload) > _U64_MAX:
        raise FrameError("data frame beyond the largest offset")
    return Data(packet_number, transfer_id, offset, payload)


def _read_ranges(data: bytes, position: int, count: int) -> tuple[tuple[Range, ...], int]:
    end_position = position + count * _RANGE.size
    if end_position > len(data):
        raise FrameError("range list truncated")
    ranges = tuple(_RANGE.iter_unpack(data[position:end_position]))
    for start, end in ranges:
        if start >= end:
            raise FrameError("empty or inverted range")
    return ranges, end_position


def _no_trailing(data: bytes, position: int) -> None:
    if position != len(data):
        raise FrameError("trailing bytes after frame")


def _decode_ack(data: bytes) -> Ack:
    _, _, delay_us, window, count = _ACK_HEADER.unpack_from(data)
    if count == 0 or count > MAX_RANGES:
        raise FrameError(f"ack with {count} ranges")
    ranges, position = _read_ranges(data, _ACK_HEADER.size, count)
    _no_trailing(data, position)
    for newer, older in zip(ranges, ranges[1:]):
        if older[1] >= newer[0]:
            raise FrameError("ack ranges overlap, touch or are not newest first")
    return Ack(delay_us / 1_000_000, window, ranges)


def _read_text(data: bytes, position: int, limit: int) -> tuple[str, int]:
    (length,) = _U8.unpack_from(data, position)
    if length > limit:
        raise FrameError("text field too long")
    raw = data[position + 1 : position + 1 + length]
    if len(raw) != length:
        raise FrameError("text field truncated")
    try:
        return bytes(raw).decode("utf-8"), position + 1 + length
    except UnicodeDecodeError as error:
        raise FrameError("text field is not UTF-8") from error


def _decode_offer(data: bytes) -> Offer:
    _, _, packet_number, transfer_id, size, sha256 = _OFFER_FIXED.unpack_from(data)
    name, position = _read_text(data, _OFFER_FIXED.size, MAX_NAME_BYTES)
    kind, position = _read_text(data, position, MAX_KIND_BYTES)
    (length,) = _U16.unpack_from(data, position)
    position += _U16.size
    if length > MAX_METADATA_BYTES:
        raise FrameError("offer metadata too long")
    metadata = bytes(data[position : position + length])
    if len(metadata) != length:
        raise FrameError("offer metadata truncated")
    _no_trailing(data, position + length)
    return Offer(packet_number, transfer_id, size, sha256, name, kind, metadata)


def _decode_accept(data: bytes) -> Accept:
    _, _, packet_number, transfer_id = _NUMBERED.unpack_from(data)
    (count,) = _U16.unpack_from(data, _NUMBERED.size)
    if count > MAX_RANGES:
        raise FrameError(f"accept with {count} ranges")
    have, position = _read_ranges(data, _NUMBERED.size + _U16.size, count)
    _no_trailing(data, position)
    for lower, upper in zip(have, have[1:]):
        if upper[0] <= lower[1]:
            raise FrameError("accept ranges overlap, touch or are not ascending")
    return Accept(packet_number, transfer_id, have)


def _decode_cancel(data: bytes) -> Cancel:
    _, _, packet_number, transfer_id, by_giver, code = _CANCEL_FIXED.unpack_from(data)
    if by_giver > 1:
        raise FrameError("cancel flag is not 0 or 1")
    try:
        cancel_code = CancelCode(code)
    except ValueError as error:
        raise FrameError(f"unknown cancel code {code}") from error
    reason, position = _read_text(data, _CANCEL_FIXED.size, MAX_REASON_BYTES)
    _no_trailing(data, position)
    return Cancel(packet_number, transfer_id, bool(by_giver), cancel_code, reason)


def _decode_done(data: bytes) -> Done:
    _, _, packet_number, transfer_id = _NUMBERED.unpack(data)
    return Done(packet_number, transfer_id)


def _decode_unknown_transfer(data: bytes) -> UnknownTransfer:
    _, _, transfer_id = _TRANSFER_ONLY.unpack(data)
    return UnknownTransfer(transfer_id)


def _decode_ping(data: bytes) -> Ping:
    _, _, nonce = _NONCE.unpack(data)
    return Ping(nonce)


def _decode_pong(data: bytes) -> Pong:
    _, _, nonce = _NONCE.unpack(data)
    return Pong(nonce)


def _decode_pmtu_probe(data: bytes) -> PmtuProbe:
    _, _, probe_id = _PROBE.unpack_from(data)
    if any(data[_PROBE.size :]):
        raise FrameError("probe padding is not zero")
    return PmtuProbe(probe_id, len(data))


def _decode_pmtu_probe_ack(data: bytes) -> PmtuProbeAck:
    _, _, probe_id, size = _PROBE_ACK.unpack(data)
    return PmtuProbeAck(probe_id, size)


_DECODERS = {
    FrameType.DATA: _decode_data,
    FrameType.ACK: _decode_ack,
    FrameType.OFFER: _decode_offer,
    FrameType.ACCEPT: _decode_accept,
    FrameType.CANCEL: _decode_cancel,
    FrameType.DONE: _decode_done,
    FrameType.UNKNOWN_TRANSFER: _decode_unknown_transfer,
    FrameType.PING: _decode_ping,
    FrameType.PONG: _decode_pong,
    FrameType.PMTU_PROBE: _decode_pmtu_probe,
    FrameType.PMTU_PROBE_ACK: _decode_pmtu_probe_ack,
}
