"""A set of integers kept as sorted, disjoint, half-open ranges: received bytes, received packets.

Adding just past the highest range (data arriving in order) takes constant time; anything else is a
binary search plus a merge.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator


class RangeSet:
    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in ranges:
            self.add(start, end)

    def add(self, start: int, end: int) -> int:
        """Add [start, end); return how many of its integers were not in the set before."""
        if start >= end:
            return 0
        starts, ends = self._starts, self._ends
        if not starts or start > ends[-1]:
            starts.append(start)
            ends.append(end)
            return end - start
        if start >= starts[-1]:
            old_end = ends[-1]
            if end > old_end:
                ends[-1] = end
                return end - old_end
            return 0
        # General case: merge every range that overlaps or touches [start, end).
        first = bisect_left(ends, start)
        last = bisect_right(starts, end)
        if first == last:
            starts.insert(first, start)
            ends.insert(first, end)
            return end - start
        covered = sum(
            min(ends[i], end) - max(starts[i], start)
            for i in range(first, last)
            if ends[i] > start and starts[i] < end
        )
        new_start = min(start, starts[first])
        new_end = max(end, ends[last - 1])
        starts[first:last] = [new_start]
        ends[first:last] = [new_end]
        return (end - start) - covered

    def __contains__(self, value: int) -> bool:
        index = bisect_right(self._starts, value) - 1
        return index >= 0 and value < self._ends[index]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return zip(self._starts, self._ends)

    def __len__(self) -> int:
        return len(self._starts)

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __repr__(self) -> str:
        return f"RangeSet({list(self)})"

    def last_end(self) -> int:
        """The end of the highest range (0 when empty): adding at or past it is the fast path."""
        return self._ends[-1] if self._ends else 0

    def total(self) -> int:
        return sum(end - start for start, end in self)

    def newest_first(self, limit: int) -> list[tuple[int, int]]:
        count = len(self._starts)
        return [(self._starts[i], self._ends[i]) for i in range(count - 1, max(count - 1 - limit, -1), -1)]

    def gaps(self, start: int, end: int) -> list[tuple[int, int]]:
        """The ranges within [start, end) that are not in the set, ascending."""
        missing = []
        position = start
        for range_start, range_end in self:
            if range_end <= position:
                continue
            if range_start >= end:
                break
            if range_start > position:
                missing.append((position, range_start))
            position = max(position, range_end)
        if position < end:
            missing.append((position, end))
        return missing

    def drop_oldest(self, keep: int) -> None:
        """Forget all but the `keep` highest ranges (bounds memory for packet-number tracking)."""
        if len(self._starts) > keep:
            del self._starts[: len(self._starts) - keep]
            del self._ends[: len(self._ends) - keep]

    def first_end_from(self, start: int) -> int:
        """The end of the contiguous run starting at `start`, or `start` when `start` is missing."""
        index = bisect_right(self._starts, start) - 1
        if index >= 0 and self._ends[index] > start:
            return self._ends[index]
        return start
