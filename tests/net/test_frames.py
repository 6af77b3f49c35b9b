"""The frame codec: every byte string decodes to a frame or raises FrameError, and the encoding is
canonical (a frame that decodes re-encodes to the very same bytes)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocsync_tui.net import frames
from ocsync_tui.net.frames import CancelCode, FrameError

u64 = st.integers(0, (1 << 64) - 1)
u32 = st.integers(0, (1 << 32) - 1)
short_text = st.text(max_size=16)  # at most 64 UTF-8 bytes, the smallest text limit


@st.composite
def disjoint_ranges(draw, newest_first: bool):
    bounds = sorted(draw(st.sets(st.integers(0, 1 << 40), min_size=2, max_size=20)))
    pairs = [(bounds[i], bounds[i + 1]) for i in range(0, len(bounds) - 1, 2)]
    # Neighbours must not touch: drop every other pair so a gap always separates them.
    pairs = pairs[::2] if len(pairs) > 1 else pairs
    pairs = [(start, end) for start, end in pairs if end > start]
    return tuple(reversed(pairs)) if newest_first else tuple(pairs)


any_frame = st.one_of(
    st.builds(frames.Data, u64, u64, st.integers(0, 1 << 50), st.binary(min_size=1, max_size=64)),
    st.builds(
        frames.Ack,
        st.integers(0, 10_000_000).map(lambda us: us / 1_000_000),
        u64,
        disjoint_ranges(newest_first=True).filter(bool),
    ),
    st.builds(frames.Offer, u64, u64, u64, st.binary(min_size=32, max_size=32), short_text, short_text,
              st.binary(max_size=frames.MAX_METADATA_BYTES)),
    st.builds(frames.Accept, u64, u64, disjoint_ranges(newest_first=False)),
    st.builds(frames.Cancel, u64, u64, st.booleans(), st.sampled_from(CancelCode), short_text),
    st.builds(frames.Done, u64, u64),
    st.builds(frames.UnknownTransfer, u64),
    st.builds(frames.Ping, u64),
    st.builds(frames.Pong, u64),
    st.builds(frames.PmtuProbe, u32, st.integers(frames.PMTU_PROBE_MIN_SIZE, 3000)),
    st.builds(frames.PmtuProbeAck, u32, u32),
)


@settings(max_examples=200, deadline=None)
@given(any_frame)
def test_every_frame_round_trips(frame):
    encoded = frames.encode(frame)
    assert frames.decode(encoded) == frame


def _decode_or_frame_error(data: bytes):
    try:
        frame = frames.decode(data)
    except FrameError:
        return None
    assert frames.encode(frame) == data, "a decoded frame must re-encode to the same bytes"
    return frame


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_decode_or_raise_frame_error(data):
    _decode_or_frame_error(data)


@settings(max_examples=300, deadline=None)
@given(any_frame, st.data())
def test_mutated_frames_decode_or_raise_frame_error(frame, data):
    encoded = bytearray(frames.encode(frame))
    mutation = data.draw(st.sampled_from(["flip", "truncate", "extend", "type"]))
    if mutation == "flip":
        position = data.draw(st.integers(0, len(encoded) - 1))
        encoded[position] ^= 1 << data.draw(st.integers(0, 7))
    elif mutation == "truncate":
        del encoded[data.draw(st.integers(0, len(encoded) - 1)) :]
    elif mutation == "extend":
        encoded += data.draw(st.binary(min_size=1, max_size=20))
    else:
        encoded[1] = data.draw(st.integers(0, 255))
    _decode_or_frame_error(bytes(encoded))


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "shorter"),
        (bytes([2, frames.FrameType.DATA]) + bytes(30), "version 2"),
        (bytes([frames.FRAME_VERSION, 200]), "unknown frame type"),
        (frames.encode_done(1, 2)[:-1], "truncated"),
        (frames.encode_data_header(1, 2, 3), "without payload"),
        (frames.encode_done(1, 2) + b"x", "too long"),
    ],
)
def test_bad_frames_say_what_is_wrong(data, message):
    with pytest.raises(FrameError, match=message):
        frames.decode(data)


def test_ack_ranges_must_be_newest_first_and_apart():
    touching = frames.encode_ack(0.0, 10, [(5, 9), (1, 5)])
    with pytest.raises(FrameError, match="overlap"):
        frames.decode(touching)
    assert frames.decode(frames.encode_ack(0.0, 10, [(6, 9), (1, 5)])).ranges == ((6, 9), (1, 5))


def test_ack_and_accept_are_bounded_to_fit_the_smallest_frame():
    many = [(3 * i, 3 * i + 1) for i in range(200)]
    ack = frames.encode_ack(0.0, 1 << 40, list(reversed(many)))
    accept = frames.encode_accept(1, 2, many)
    assert len(ack) < 1100 and len(accept) < 1100
    assert len(frames.decode(ack).ranges) == frames.MAX_RANGES


def test_probe_frame_has_the_requested_size():
    assert len(frames.encode_pmtu_probe(7, 8000)) == 8000
    assert frames.decode(frames.encode_pmtu_probe(7, 8000)) == frames.PmtuProbe(7, 8000)


def test_long_cancel_reason_is_cut_on_a_character_boundary():
    frame = frames.decode(frames.encode_cancel(1, 2, False, CancelCode.CANCELLED, "é" * 300))
    assert frame.reason == "é" * (frames.MAX_REASON_BYTES // 2)
