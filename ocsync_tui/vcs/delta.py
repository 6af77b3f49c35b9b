"""Linear-time deltas in git's pack delta format, after git's diff-delta.

``create_delta(base, target)`` returns a delta that ``dulwich.pack.apply_delta(base, delta)`` (and git)
turn back into ``target``, or None when it would not be worth storing: larger than half the target.

How it stays linear in len(base) + len(target) while Python touches few bytes one at a time:
- The common prefix and suffix are measured first with slice comparisons (C speed), so a small edit
  of a large file costs a few comparisons and no index at all.
- Where an edit replaced bytes in place, the scan picks up the base right after the last copy.
- Otherwise the base is indexed by 16-byte keys at aligned offsets, spaced so the index keeps at most
  2^16 entries, repeated keys left out; the target is probed byte by byte and every match found is
  extended forwards and backwards by comparing slices, doubling the span and then halving it around
  the first mismatch.
- Where probes keep missing, the scan strides over the target (a stride coprime to the index spacing
  still meets every aligned block of a long enough match), and it gives up as soon as the unmatched
  bytes alone exceed the size budget, so a file rewritten throughout costs a fraction of one pass.
"""

from collections import Counter

KEY_SIZE = 16
# An indexed key can sit in a phrase the base repeats; a match this short is more likely a false
# lead than the right alignment, and taking it would hide the right one.
MIN_INDEXED_MATCH = 64
_MAX_INDEX_ENTRIES = 1 << 16
_MAX_INSERT = 0x7F
_MAX_COPY = 0xFFFFFF
_MAX_BASE_OFFSET = 0xFFFFFFFF
# Misses in a row before the scan starts striding; the stride is odd, so coprime to the index spacing
# (a power of two) and its probes meet every aligned key of a long enough match.
_MISSES_BEFORE_STRIDE = 64
_MISS_STRIDE = 17
_FIRST_SPAN = 64


def create_delta(base: bytes, target: bytes) -> bytes | None:
    """A git delta turning base into target, or None if it would exceed half of len(target)."""
    base, target = bytes(base), bytes(target)
    if len(base) > _MAX_BASE_OFFSET:
        return None  # copy offsets are 32-bit in git's delta format
    budget = len(target) // 2
    out = bytearray(_size_varint(len(base)) + _size_varint(len(target)))
    prefix = _forward_match(base, 0, target, 0, min(len(base), len(target)))
    suffix = _backward_match(base, len(base), target, len(target), min(len(base), len(target)) - prefix)
    _emit_copy(out, 0, prefix)
    end = len(target) - suffix
    pending = prefix  # start of the target bytes no copy covers yet
    resume = prefix  # base offset just after the last copy: where an in-place edit picks up again
    index: dict[bytes, int] | None = None
    # A gap too short for two indexed matches saves less than indexing the base costs (an added tree
    # entry is such a gap): it becomes one insert.
    position = prefix if end - prefix >= 2 * MIN_INDEXED_MATCH else end
    misses = 0
    while position + KEY_SIZE <= end:
        if misses >= _MISSES_BEFORE_STRIDE:
            # Most of a rewritten file is crossed here, so this loop does as little as it can.
            stop = min(end - KEY_SIZE, pending + budget - len(out))
            position, found = _stride_to_indexed_key(index, target, position, stop)
            if found is None:
                if position > end - KEY_SIZE:
                    break
                return None
            minimum = MIN_INDEXED_MATCH
        else:
            key = target[position : position + KEY_SIZE]
            found = resume + position - pending
            minimum = KEY_SIZE
            if base[found : found + KEY_SIZE] != key:
                if index is None:
                    index = _block_index(base)
                found = index.get(key)
                minimum = MIN_INDEXED_MATCH
        if found is not None:
            forward = KEY_SIZE + _forward_match(
                base, found + KEY_SIZE, target, position + KEY_SIZE, min(len(base) - found, end - position) - KEY_SIZE
            )
            backward = _backward_match(base, found, target, position, min(found, position - pending))
        if found is None or forward + backward < minimum:
            misses += 1
            position += 1 if misses < _MISSES_BEFORE_STRIDE else _MISS_STRIDE
            if len(out) + position - pending > budget:
                return None
            continue
        _emit_insert(out, target[pending : position - backward])
        _emit_copy(out, found - backward, backward + forward)
        pending = position = position + forward
        resume = found + forward
        misses = 0
        if len(out) > budget:
            return None
    _emit_insert(out, target[pending:end])
    _emit_copy(out, len(base) - suffix, suffix)
    return bytes(out) if len(out) <= budget else None


def _stride_to_indexed_key(index: dict[bytes, int], target: bytes, position: int, stop: int) -> tuple[int, int | None]:
    """The first position from `position` on, in strides, up to `stop`, whose key the index holds."""
    indexed = index.get
    while position <= stop:
        found = indexed(target[position : position + KEY_SIZE])
        if found is not None:
            return position, found
        position += _MISS_STRIDE
    return position, None


def _block_index(base: bytes) -> dict[bytes, int]:
    """Offsets of the base's KEY_SIZE-byte keys at an aligned spacing that bounds the index size.

    Keys that occur more than once are left out: a repeated phrase or a run of zeros would point
    every probe at one arbitrary copy and shred the delta into short copies.
    """
    # A power of two, so that the odd miss stride is coprime to it.
    spacing = KEY_SIZE
    while spacing * _MAX_INDEX_ENTRIES < len(base):
        spacing *= 2
    offsets = range(0, len(base) - KEY_SIZE + 1, spacing)
    keys = [base[offset : offset + KEY_SIZE] for offset in offsets]
    counts = Counter(keys)
    return {key: offset for key, offset in zip(keys, offsets) if counts[key] == 1}


def _forward_match(a: bytes, a_start: int, b: bytes, b_start: int, limit: int) -> int:
    """Length of the common run of a[a_start:] and b[b_start:], at most limit."""
    matched, span = 0, _FIRST_SPAN
    while matched < limit:
        span = min(span, limit - matched)
        if a[a_start + matched : a_start + matched + span] != b[b_start + matched : b_start + matched + span]:
            break
        matched += span
        span *= 2
    else:
        return limit
    # The first difference lies within the next `span` bytes: halve the window around it.
    while span > 1:
        half = span // 2
        low_a, low_b = a_start + matched, b_start + matched
        if a[low_a : low_a + half] == b[low_b : low_b + half]:
            matched += half
            span -= half
        else:
            span = half
    return matched


def _backward_match(a: bytes, a_end: int, b: bytes, b_end: int, limit: int) -> int:
    """Length of the common run ending just before a[a_end] and b[b_end], at most limit."""
    matched, span = 0, _FIRST_SPAN
    while matched < limit:
        span = min(span, limit - matched)
        if a[a_end - matched - span : a_end - matched] != b[b_end - matched - span : b_end - matched]:
            break
        matched += span
        span *= 2
    else:
        return limit
    while span > 1:
        half = span // 2
        high_a, high_b = a_end - matched, b_end - matched
        if a[high_a - half : high_a] == b[high_b - half : high_b]:
            matched += half
            span -= half
        else:
            span = half
    return matched


def _size_varint(size: int) -> bytes:
    """git's delta header size: 7 bits per byte, least significant first."""
    encoded = bytearray()
    while size >= 0x80:
        encoded.append(0x80 | (size & 0x7F))
        size >>= 7
    encoded.append(size)
    return bytes(encoded)


def _emit_insert(out: bytearray, data: bytes) -> None:
    for start in range(0, len(data), _MAX_INSERT):
        chunk = data[start : start + _MAX_INSERT]
        out.append(len(chunk))
        out += chunk


def _emit_copy(out: bytearray, offset: int, size: int) -> None:
    while size > 0:
        chunk = min(size, _MAX_COPY)
        opcode_at = len(out)
        out.append(0x80)
        for bit, value in enumerate((offset & 0xFF, (offset >> 8) & 0xFF, (offset >> 16) & 0xFF, offset >> 24)):
            if value:
                out[opcode_at] |= 1 << bit
                out.append(value)
        for bit, value in enumerate((chunk & 0xFF, (chunk >> 8) & 0xFF, chunk >> 16), start=4):
            if value:
                out[opcode_at] |= 1 << bit
                out.append(value)
        offset += chunk
        size -= chunk
