"""RangeSet against a plain set of integers as the model."""

from hypothesis import given, settings
from hypothesis import strategies as st

from ocsync_tui.net.ranges import RangeSet

spans = st.lists(st.tuples(st.integers(0, 300), st.integers(0, 40)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(spans, st.integers(0, 340), st.integers(0, 340))
def test_range_set_behaves_like_a_set_of_integers(additions, query_start, query_length):
    ranges, model = RangeSet(), set()
    for start, length in additions:
        added = ranges.add(start, start + length)
        new = set(range(start, start + length)) - model
        assert added == len(new)
        model |= new
        pairs = list(ranges)
        assert all(end < next_start for (_, end), (next_start, _) in zip(pairs, pairs[1:])), "disjoint, apart"
    assert {value for start, end in ranges for value in range(start, end)} == model
    assert ranges.total() == len(model)
    assert ranges.last_end() == (max(model) + 1 if model else 0)
    query_end = query_start + query_length
    gaps = {value for start, end in ranges.gaps(query_start, query_end) for value in range(start, end)}
    assert gaps == set(range(query_start, query_end)) - model
    assert (query_start in ranges) == (query_start in model)
    run_end = ranges.first_end_from(query_start)
    assert all(value in model for value in range(query_start, run_end)) and run_end not in model


def test_newest_first_and_drop_oldest():
    ranges = RangeSet([(0, 2), (5, 7), (10, 12)])
    assert ranges.newest_first(2) == [(10, 12), (5, 7)]
    ranges.drop_oldest(1)
    assert list(ranges) == [(10, 12)]
