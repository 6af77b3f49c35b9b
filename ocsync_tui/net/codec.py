"""The secure channel's wire format: one datagram is one packet, of one of seven fixed layouts.

Every packet starts with a type byte, the version byte (1) and two reserved zero bytes, then fixed-size
fields (integers little-endian, as WireGuard's). Handshake packets have exactly one size each; a
transport packet is a 16-byte header and an AEAD ciphertext of at least the 16-byte tag.

    1 initiation     sender u32 | ephemeral 32 | static 48 | payload 60 | mac1 16 | mac2 16  = 180
    2 response       sender u32 | receiver u32 | ephemeral 32 | empty 16 | mac1 16 | mac2 16 = 92
    3 cookie reply   receiver u32 | nonce 24 | cookie 32                                      = 64
    4 transport      receiver u32 | counter u64 | ciphertext >= 16                           >= 32
    5 intro hello    sender u32 | ephemeral 32 | zero padding 100                             = 140
    6 intro reply    sender u32 | receiver u32 | ephemeral 32 | static 48 | payload 48        = 140
    7 intro finish   receiver u32 | static 48 | payload 48                                    = 104

The initiation payload is a TAI64N timestamp followed by the initiator's Ed25519 identity key (so a
device we do not know can be shown by its device ID); WireGuard's has the timestamp only. An
introduction's first packet is padded to the size of the reply it asks for: no amplification.

`decode` turns any byte string into a packet or raises CodecError; nothing else escapes it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ocsync_tui.errors import OcsyncError

VERSION = 1
MAX_DATAGRAM_SIZE = 65507  # the largest UDP payload IPv4 can carry

INITIATION, RESPONSE, COOKIE_REPLY, TRANSPORT, INTRO_HELLO, INTRO_REPLY, INTRO_FINISH = range(1, 8)

TRANSPORT_HEADER = struct.Struct("<BBHIQ")
TRANSPORT_HEADER_SIZE = TRANSPORT_HEADER.size
TAG_SIZE = 16
TRANSPORT_OVERHEAD = TRANSPORT_HEADER_SIZE + TAG_SIZE
MAX_TRANSPORT_PAYLOAD = MAX_DATAGRAM_SIZE - TRANSPORT_OVERHEAD
MACS_SIZE = 32
INTRO_PADDING_SIZE = 100

_COMMON = struct.Struct("<BBH")
_INITIATION = struct.Struct("<BBHI32s48s60s16s16s")
_RESPONSE = struct.Struct("<BBHII32s16s16s16s")
_COOKIE_REPLY = struct.Struct("<BBHI24s32s")
_INTRO_HELLO = struct.Struct(f"<BBHI32s{INTRO_PADDING_SIZE}s")
_INTRO_REPLY = struct.Struct("<BBHII32s48s48s")
_INTRO_FINISH = struct.Struct("<BBHI48s48s")

INITIATION_SIZE = _INITIATION.size
RESPONSE_SIZE = _RESPONSE.size
COOKIE_REPLY_SIZE = _COOKIE_REPLY.size
INTRO_HELLO_SIZE = _INTRO_HELLO.size
INTRO_REPLY_SIZE = _INTRO_REPLY.size
INTRO_FINISH_SIZE = _INTRO_FINISH.size


class CodecError(OcsyncError):
    """A datagram that is not a well-formed packet of this version."""


@dataclass(frozen=True, slots=True)
class Initiation:
    sender: int
    ephemeral: bytes
    encrypted_static: bytes
    encrypted_payload: bytes
    mac1: bytes = bytes(16)
    mac2: bytes = bytes(16)

    @property
    def body(self) -> bytes:
        return self.ephemeral + self.encrypted_static + self.encrypted_payload


@dataclass(frozen=True, slots=True)
class Response:
    sender: int
    receiver: int
    ephemeral: bytes
    encrypted_empty: bytes
    mac1: bytes = bytes(16)
    mac2: bytes = bytes(16)

    @property
    def body(self) -> bytes:
        return self.ephemeral + self.encrypted_empty


@dataclass(frozen=True, slots=True)
class CookieReply:
    receiver: int
    nonce: bytes
    encrypted_cookie: bytes


@dataclass(frozen=True, slots=True)
class Transport:
    receiver: int
    counter: int
    ciphertext: bytes


@dataclass(frozen=True, slots=True)
class IntroHello:
    sender: int
    ephemeral: bytes
    padding: bytes = bytes(INTRO_PADDING_SIZE)


@dataclass(frozen=True, slots=True)
class IntroReply:
    sender: int
    receiver: int
    ephemeral: bytes
    encrypted_static: bytes
    encrypted_payload: bytes


@dataclass(frozen=True, slots=True)
class IntroFinish:
    receiver: int
    encrypted_static: bytes
    encrypted_payload: bytes


Packet = Initiation | Response | CookieReply | Transport | IntroHello | IntroReply | IntroFinish


def encode(packet: Packet) -> bytes:
    match packet:
        case Initiation():
            return _INITIATION.pack(
                INITIATION, VERSION, 0, packet.sender, packet.ephemeral, packet.encrypted_static,
                packet.encrypted_payload, packet.mac1, packet.mac2,
            )
        case Response():
            return _RESPONSE.pack(
                RESPONSE, VERSION, 0, packet.sender, packet.receiver, packet.ephemeral, packet.encrypted_empty,
                packet.mac1, packet.mac2,
            )
        case CookieReply():
            return _COOKIE_REPLY.pack(COOKIE_REPLY, VERSION, 0, packet.receiver, packet.nonce, packet.encrypted_cookie)
        case Transport():
            return TRANSPORT_HEADER.pack(TRANSPORT, VERSION, 0, packet.receiver, packet.counter) + packet.ciphertext
        case IntroHello():
            return _INTRO_HELLO.pack(INTRO_HELLO, VERSION, 0, packet.sender, packet.ephemeral, packet.padding)
        case IntroReply():
            return _INTRO_REPLY.pack(
                INTRO_REPLY, VERSION, 0, packet.sender, packet.receiver, packet.ephemeral, packet.encrypted_static,
                packet.encrypted_payload,
            )
        case IntroFinish():
            return _INTRO_FINISH.pack(
                INTRO_FINISH, VERSION, 0, packet.receiver, packet.encrypted_static, packet.encrypted_payload
            )
    raise TypeError(f"not a packet: {packet!r}")


_FIXED_LAYOUTS = {
    INITIATION: (_INITIATION, Initiation),
    RESPONSE: (_RESPONSE, Response),
    COOKIE_REPLY: (_COOKIE_REPLY, CookieReply),
    INTRO_HELLO: (_INTRO_HELLO, IntroHello),
    INTRO_REPLY: (_INTRO_REPLY, IntroReply),
    INTRO_FINISH: (_INTRO_FINISH, IntroFinish),
}


def packet_type(data: bytes) -> int:
    """The type of a datagram whose common header is valid, or raise CodecError."""
    if len(data) < _COMMON.size:
        raise CodecError(f"datagram of {len(data)} bytes is shorter than a packet header")
    if len(data) > MAX_DATAGRAM_SIZE:
        raise CodecError(f"datagram of {len(data)} bytes exceeds the maximum {MAX_DATAGRAM_SIZE}")
    kind, version, reserved = _COMMON.unpack_from(data)
    if version != VERSION:
        raise CodecError(f"packet version {version} is not {VERSION}: is the peer running another ocsync version?")
    if reserved:
        raise CodecError("reserved header bytes are not zero")
    return kind


def decode(data: bytes) -> Packet:
    kind = packet_type(data)
    if kind == TRANSPORT:
        if len(data) < TRANSPORT_OVERHEAD:
            raise CodecError(f"transport packet of {len(data)} bytes is shorter than {TRANSPORT_OVERHEAD}")
        _, _, _, receiver, counter = TRANSPORT_HEADER.unpack_from(data)
        return Transport(receiver, counter, bytes(data[TRANSPORT_HEADER_SIZE:]))
    layout = _FIXED_LAYOUTS.get(kind)
    if layout is None:
        raise CodecError(f"unknown packet type {kind}")
    fields, packet_class = layout
    if len(data) != fields.size:
        raise CodecError(f"packet of type {kind} must be {fields.size} bytes, not {len(data)}")
    _, _, _, *values = fields.unpack(data)
    if packet_class is IntroHello and any(values[-1]):
        raise CodecError("introduction padding is not zero")
    return packet_class(*values)
