"""The replay window against a plain model, and the limits that retire keys."""

from hypothesis import given, settings
from hypothesis import strategies as st

from ocsync_tui.net.session import REPLAY_WINDOW_SIZE, Keypair, ReplayWindow, SessionLimits


def test_accepts_each_counter_once_in_any_order():
    window = ReplayWindow()
    assert [window.accept(c) for c in (0, 2, 1, 2, 0, 5, 3, 4, 5)] == [
        True, True, True, False, False, True, True, True, False,
    ]


def test_refuses_counters_behind_the_window():
    window = ReplayWindow()
    assert window.accept(10_000)
    assert window.accept(10_000 - REPLAY_WINDOW_SIZE)
    assert not window.accept(10_000 - REPLAY_WINDOW_SIZE - 1)
    assert window.accept(10_000 - 1)


def test_a_large_jump_clears_the_whole_ring():
    window = ReplayWindow()
    for counter in range(200):
        window.accept(counter)
    jump = 200 + 100 * REPLAY_WINDOW_SIZE
    assert window.accept(jump)
    assert window.accept(jump - 5) and not window.accept(jump - 5)


def test_refuses_counters_at_the_reject_limit():
    window = ReplayWindow(reject_after_messages=100)
    assert window.accept(99) and not window.accept(100)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 3 * REPLAY_WINDOW_SIZE), max_size=300))
def test_matches_a_set_model(counters):
    """Accept iff never seen and no more than the window size behind the greatest accepted."""
    window, seen, greatest = ReplayWindow(), set(), -1
    for counter in counters:
        expected = counter not in seen and greatest - counter <= REPLAY_WINDOW_SIZE
        assert window.accept(counter) == expected, counter
        if expected:
            seen.add(counter)
            greatest = max(greatest, counter)


def make_keypair(is_initiator, limits):
    return Keypair(bytes(32), bytes(32), local_index=1, remote_index=2, created=100.0, is_initiator=is_initiator,
                   limits=limits)


def test_responder_keys_send_only_once_confirmed():
    limits = SessionLimits()
    responder = make_keypair(False, limits)
    assert not responder.usable_for_sending(100.0, limits)
    responder.confirmed = True
    assert responder.usable_for_sending(100.0, limits)


def test_keys_are_refused_after_time_and_count():
    limits = SessionLimits(reject_after_time=180.0, reject_after_messages=10)
    keypair = make_keypair(True, limits)
    assert keypair.usable_for_sending(279.9, limits) and not keypair.usable_for_sending(280.0, limits)
    keypair.send_counter = 10
    assert not keypair.usable_for_sending(100.0, limits)
