"""The wire codec: fixed layouts, and any byte string decodes to a packet or raises CodecError."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocsync_tui.net import codec
from ocsync_tui.net.codec import (
    CodecError,
    CookieReply,
    Initiation,
    IntroFinish,
    IntroHello,
    IntroReply,
    Response,
    Transport,
    decode,
    encode,
)


def blob(size, fill=0xAB):
    return bytes([fill]) * size


SAMPLES = [
    Initiation(0x01020304, blob(32), blob(48), blob(60), blob(16, 1), blob(16, 2)),
    Response(7, 0xFFFFFFFF, blob(32), blob(16), blob(16, 3), blob(16, 4)),
    CookieReply(9, blob(24), blob(32)),
    Transport(10, 2**64 - 1, blob(16)),
    Transport(11, 5, blob(1200)),
    IntroHello(12, blob(32)),
    IntroReply(13, 14, blob(32), blob(48), blob(48)),
    IntroFinish(15, blob(48), blob(48)),
]


@pytest.mark.parametrize("packet", SAMPLES, ids=lambda packet: type(packet).__name__)
def test_round_trip(packet):
    data = encode(packet)
    assert data[1] == codec.VERSION and data[2:4] == b"\0\0"
    assert decode(data) == packet


def test_sizes_follow_wireguard_and_never_amplify():
    assert codec.INITIATION_SIZE == 180 and codec.RESPONSE_SIZE == 92 and codec.COOKIE_REPLY_SIZE == 64
    assert codec.INITIATION_SIZE >= codec.RESPONSE_SIZE >= codec.COOKIE_REPLY_SIZE
    assert codec.INTRO_HELLO_SIZE == codec.INTRO_REPLY_SIZE == 140 and codec.INTRO_FINISH_SIZE == 104
    assert codec.TRANSPORT_OVERHEAD == 32


@pytest.mark.parametrize(
    "data, complaint",
    [
        (b"", "shorter than a packet header"),
        (b"\x04\x01\0", "shorter than a packet header"),
        (b"\x01\x02\0\0" + bytes(176), "version 2"),
        (b"\x01\x01\x01\0" + bytes(176), "reserved"),
        (b"\x09\x01\0\0" + bytes(40), "unknown packet type 9"),
        (b"\x01\x01\0\0" + bytes(175), "must be 180 bytes"),
        (b"\x04\x01\0\0" + bytes(27), "shorter than 32"),
        (b"\x04\x01\0\0" + bytes(codec.MAX_DATAGRAM_SIZE), "exceeds the maximum"),
        (encode(IntroHello(1, blob(32)))[:-1] + b"\x01", "padding is not zero"),
    ],
)
def test_malformed_datagrams_get_a_clear_error(data, complaint):
    with pytest.raises(CodecError, match=complaint):
        decode(data)


def _decodes_or_refuses(data: bytes) -> None:
    try:
        packet = decode(data)
    except CodecError:
        return
    assert encode(packet) == data


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_decode_or_raise_codec_error(data):
    _decodes_or_refuses(data)


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from([encode(packet) for packet in SAMPLES]),
    st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=4),
    st.integers(-3, 3),
)
def test_mutated_packets_decode_or_raise_codec_error(data, flips, resize):
    mutated = bytearray(data)
    for position, value in flips:
        if mutated:
            mutated[position % len(mutated)] = value
    if resize > 0:
        mutated += bytes(resize)
    elif resize < 0:
        del mutated[resize:]
    _decodes_or_refuses(bytes(mutated))
