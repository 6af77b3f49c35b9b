import os
import random

from dulwich.pack import apply_delta
from hypothesis import given, settings
from hypothesis import strategies as st

from ocsync_tui.vcs.delta import create_delta


def applied(base: bytes, delta: bytes) -> bytes:
    return b"".join(apply_delta(base, delta))


def mutate(content: bytes, edits: list[tuple[int, int, int, bytes]]) -> bytes:
    """Apply (kind, where, length, data) edits: 0 replace, 1 insert, 2 delete."""
    result = bytearray(content)
    for kind, where, length, data in edits:
        where %= len(result) + 1
        if kind == 0:
            result[where : where + len(data)] = data
        elif kind == 1:
            result[where:where] = data
        else:
            del result[where : where + length]
    return bytes(result)


edit = st.tuples(st.integers(0, 2), st.integers(0, 1 << 20), st.integers(0, 300), st.binary(max_size=200))


@settings(max_examples=200, deadline=None)
@given(base=st.binary(max_size=3000), target=st.binary(max_size=3000))
def test_any_delta_reproduces_its_target(base: bytes, target: bytes) -> None:
    delta = create_delta(base, target)
    if delta is not None:
        assert applied(base, delta) == target
        assert len(delta) <= len(target) // 2


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), size=st.integers(0, 200_000), edits=st.lists(edit, max_size=8))
def test_delta_of_an_edited_copy_reproduces_it(seed: int, size: int, edits) -> None:
    base = random.Random(seed).randbytes(size)
    target = mutate(base, edits)
    delta = create_delta(base, target)
    if delta is not None:
        assert applied(base, delta) == target
    if size >= 50_000:
        # A few edits of at most ~500 bytes each: the delta must carry little more than the new bytes.
        assert delta is not None
        assert len(delta) <= 200 + sum(len(data) + 40 for _, _, _, data in edits)


@settings(max_examples=100, deadline=None)
@given(
    unit=st.binary(min_size=1, max_size=40),
    repeats=st.integers(1, 3000),
    edits=st.lists(edit, max_size=6),
)
def test_repetitive_content_reproduces(unit: bytes, repeats: int, edits) -> None:
    base = unit * repeats
    target = mutate(base, edits)
    delta = create_delta(base, target)
    if delta is not None:
        assert applied(base, delta) == target


def test_one_byte_edit_of_a_large_file_gives_a_tiny_delta() -> None:
    base = os.urandom(10 << 20)
    target = bytearray(base)
    target[len(base) // 3] ^= 0x01
    delta = create_delta(base, bytes(target))
    assert delta is not None and len(delta) < 64
    assert applied(base, delta) == target


def test_scattered_edits_of_text_cost_about_the_new_bytes() -> None:
    lines = [b"line %d of some text file" % number for number in range(100_000)]
    base = b"\n".join(lines)
    rng = random.Random(3)
    for _ in range(50):
        lines[rng.randrange(len(lines))] = b"changed!"
    target = b"\n".join(lines)
    delta = create_delta(base, target)
    assert delta is not None and len(delta) < 50 * 30
    assert applied(base, delta) == target


def test_moved_blocks_are_found_anywhere_in_the_base() -> None:
    base = os.urandom(1 << 20)
    target = base[600_000:] + os.urandom(100) + base[:600_000]
    delta = create_delta(base, target)
    assert delta is not None and len(delta) < 200
    assert applied(base, delta) == target


def test_a_file_rewritten_throughout_is_not_deltified() -> None:
    assert create_delta(os.urandom(1 << 20), os.urandom(1 << 20)) is None


def test_long_copies_and_inserts_are_split_into_valid_ops() -> None:
    base = bytes(range(256)) * (17 << 12)  # 17 MiB: one copy must span more than 0xFFFFFF bytes
    target = base + os.urandom(1000)
    delta = create_delta(base, target)
    assert delta is not None
    assert applied(base, delta) == target


def test_empty_inputs_are_not_worth_a_delta() -> None:
    assert create_delta(b"", b"") is None  # nothing is smaller than half of nothing
    assert create_delta(b"abc" * 100, b"") is None
    assert create_delta(b"", b"x" * 100) is None


def test_a_long_match_after_a_rewritten_start_is_found_in_a_large_base() -> None:
    # 17 MiB puts the index spacing where a stride sharing a factor with it would miss every key.
    base = os.urandom(17 << 20)
    new_start = os.urandom(300_000)
    target = new_start + base[1 << 20 : 16 << 20] + os.urandom(100)
    delta = create_delta(base, target)
    assert delta is not None and len(delta) < len(new_start) * 1.01 + 1000
    assert applied(base, delta) == target
