"""RFC 9002 section 5 and 6.2 arithmetic, checked against hand-computed values."""

import pytest

from ocsync_tui.net.rtt import INITIAL_RTT, TIMER_GRANULARITY, RttEstimator


def test_before_any_sample_the_initial_rtt_rules():
    rtt = RttEstimator()
    assert rtt.smoothed_rtt == INITIAL_RTT and rtt.rttvar == INITIAL_RTT / 2
    assert rtt.probe_timeout() == pytest.approx(INITIAL_RTT + 4 * INITIAL_RTT / 2 + 0.025)


def test_first_sample_sets_everything_and_later_ones_smooth():
    rtt = RttEstimator(max_ack_delay=0.025)
    rtt.update(0.100, ack_delay=0.050)  # the first sample ignores ack delay
    assert (rtt.min_rtt, rtt.smoothed_rtt, rtt.rttvar) == (0.100, 0.100, 0.050)
    rtt.update(0.140, ack_delay=0.040)  # ack delay capped at max_ack_delay: adjusted = 0.115
    assert rtt.rttvar == pytest.approx(0.75 * 0.050 + 0.25 * 0.015)
    assert rtt.smoothed_rtt == pytest.approx(0.875 * 0.100 + 0.125 * 0.115)
    assert rtt.min_rtt == 0.100


def test_ack_delay_never_takes_a_sample_below_min_rtt():
    rtt = RttEstimator()
    rtt.update(0.100, 0.0)
    rtt.update(0.110, 0.020)  # 0.110 < min_rtt + delay: the delay is not subtracted
    assert rtt.smoothed_rtt == pytest.approx(0.875 * 0.100 + 0.125 * 0.110)


def test_probe_timeout_backs_off_exponentially_and_loss_delay_is_nine_eighths():
    rtt = RttEstimator(max_ack_delay=0.025)
    rtt.update(0.010, 0.0)
    base = 0.010 + 4 * 0.005 + 0.025
    assert [rtt.probe_timeout(n) for n in range(3)] == pytest.approx([base, 2 * base, 4 * base])
    assert rtt.loss_delay() == pytest.approx(9 / 8 * 0.010)
    tiny = RttEstimator()
    tiny.update(0.0001, 0.0)
    assert tiny.loss_delay() == TIMER_GRANULARITY
