"""Congestion control: a BBR-style model of the path, with a loss guard, and a pacer.

Why model-based: a loss-based controller (RFC 9002's NewReno, CUBIC) halves its window on every loss
event, so 1–3 % of random loss on Wi-Fi or a long path keeps it far below the path's capacity. BBR
(Cardwell et al., "BBR: Congestion-Based Congestion Control", 2016) instead estimates the bottleneck
bandwidth (a windowed maximum of delivery-rate samples) and the minimum RTT, paces at a gain times that
bandwidth and caps data in flight at a gain times their product (the BDP). Random loss lowers the
delivery rate only by the fraction lost, so the rate does not collapse.

Pure BBRv1 ignores loss altogether, which floods shallow buffers. Following BBRv2/v3 we keep a guard,
`inflight_hi`: a round trip that loses more than LOSS_THRESHOLD of what it carried, and at least
LOSS_GUARD_MIN_PACKETS packets (far above random loss on a usable path), caps data in flight at BETA
times the window; rounds without such loss raise the cap again, by a step that doubles each round,
until it no longer binds. High loss also ends STARTUP.

Without BBR's PROBE_RTT phase (which stalls the flow every 10 s), the minimum RTT is a 10 s windowed
minimum refreshed by the 0.75 gain phase of PROBE_BW, which drains our own queue every cycle.

The bandwidth filter spans BANDWIDTH_FILTER_ROUNDS round trips but at least BANDWIDTH_FILTER_MIN_TIME:
on a sub-millisecond path ten rounds last a few milliseconds, about as long as the event loop can be
late (a disk flush, another peer's burst), and a filter that short would forget the path's rate and
take the slow rounds of each stall for its capacity, lower round after round.

Delivery-rate samples follow draft-cheng-iccrg-delivery-rate-estimation: each sent packet carries a
snapshot of the connection's delivery state (`on_packet_sent`), and an acknowledgement turns the newest
acknowledged packet's snapshot into one rate sample, so a batch of acknowledgements costs one sample.
"""

from __future__ import annotations

import enum
from collections import deque

STARTUP_GAIN = 2.885  # 2 / ln 2: doubles the delivery rate every round trip.
DRAIN_GAIN = 1 / STARTUP_GAIN
PROBE_BW_GAINS = (1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
CWND_GAIN = 2.0
BANDWIDTH_FILTER_ROUNDS = 10
BANDWIDTH_FILTER_MIN_TIME = 0.05
MIN_RTT_WINDOW = 10.0
FULL_BANDWIDTH_GROWTH = 1.25
FULL_BANDWIDTH_ROUNDS = 3
LOSS_THRESHOLD = 0.10
# Small rounds (early STARTUP, short paths) see 10 % by chance under a few % of random loss; as
# BBRv2's startup exit (8 loss events), a round needs this many lost packets to count.
LOSS_GUARD_MIN_PACKETS = 8
BETA = 0.7
INITIAL_WINDOW_PACKETS = 10
MIN_WINDOW_PACKETS = 4
# Packets the pacer may send back to back after an idle spell, as time at the pacing rate.
PACING_BURST_TIME = 0.004
MIN_RTT_FLOOR = 1e-5

# Index of each field in the snapshot tuple `on_packet_sent` returns.
SNAPSHOT_DELIVERED, SNAPSHOT_DELIVERED_TIME, SNAPSHOT_FIRST_SENT_TIME, SNAPSHOT_APP_LIMITED = range(4)
Snapshot = tuple[int, float, float, bool]


class BbrState(enum.Enum):
    STARTUP = "startup"
    DRAIN = "drain"
    PROBE_BW = "probe_bw"


class BbrController:
    """Window and pacing rate for one session. Sizes are bytes of datagrams, rates bytes per second."""

    def __init__(self, max_datagram_size: int = 1200, initial_rtt: float = 0.333, ack_batch_packets: int = 8) -> None:
        """`ack_batch_packets`: how many packets the receiver may take before it acknowledges; the
        window always leaves room for two such batches, or a short path would wait for delayed acks."""
        self.max_datagram_size = max_datagram_size
        self.ack_batch_packets = ack_batch_packets
        self.state = BbrState.STARTUP
        self.cwnd = INITIAL_WINDOW_PACKETS * max_datagram_size
        self.pacing_gain = STARTUP_GAIN
        self.pacing_rate = STARTUP_GAIN * self.cwnd / initial_rtt
        self.bottleneck_bandwidth = 0.0
        self.min_rtt: float | None = None
        self.inflight_hi: int | None = None

        self._delivered = 0
        self._delivered_time = 0.0
        self._first_sent_time = 0.0
        self._app_limited_until = 0
        self._round_count = 0
        self._next_round_delivered = 0
        self._round_lost = 0
        self._round_delivered = 0
        # (round, time, rate), rates strictly decreasing: the front is the windowed maximum.
        self._bandwidth_samples: deque[tuple[int, float, float]] = deque()
        self._min_rtt_stamp = 0.0
        self._full_bandwidth = 0.0
        self._full_bandwidth_rounds = 0
        self._cycle_index = 0
        self._cycle_stamp = 0.0
        self._probe_up_step = max_datagram_size

    @property
    def min_window(self) -> int:
        return max(MIN_WINDOW_PACKETS, self.ack_batch_packets + 2) * self.max_datagram_size

    def bdp(self) -> float:
        if self.min_rtt is None or not self.bottleneck_bandwidth:
            return float(INITIAL_WINDOW_PACKETS * self.max_datagram_size)
        return self.bottleneck_bandwidth * self.min_rtt

    def on_packet_sent(self, now: float, bytes_in_flight: int) -> Snapshot:
        """Call before sending an ack-eliciting packet; keep the snapshot with the packet."""
        if bytes_in_flight == 0:
            self._first_sent_time = now
            self._delivered_time = now
        return (self._delivered, self._delivered_time, self._first_sent_time, self._app_limited_until > 0)

    def on_app_limited(self, bytes_in_flight: int) -> None:
        """The sender has nothing more to send although the window allows: samples are not the path's."""
        self._app_limited_until = max(self._delivered + bytes_in_flight, 1)

    def on_ack(
        self,
        now: float,
        acked_bytes: int,
        newest_snapshot: Snapshot,
        newest_sent_time: float,
        rtt_sample: float | None,
        bytes_in_flight: int,
    ) -> None:
        """Newly acknowledged packets: their total size, and the most recently sent one's snapshot."""
        self._delivered += acked_bytes
        self._delivered_time = now
        self._round_delivered += acked_bytes
        prior_delivered, prior_time, prior_first_sent, sample_app_limited = newest_snapshot
        if self._app_limited_until and self._delivered > self._app_limited_until:
            self._app_limited_until = 0

        if rtt_sample is not None:
            # A same-tick acknowledgement (a coarse clock, two cores in one process) must not make
            # the BDP zero.
            rtt_sample = max(rtt_sample, MIN_RTT_FLOOR)
        if rtt_sample is not None and (
            self.min_rtt is None or rtt_sample <= self.min_rtt or now - self._min_rtt_stamp > MIN_RTT_WINDOW
        ):
            self.min_rtt = rtt_sample
            self._min_rtt_stamp = now

        round_start = prior_delivered >= self._next_round_delivered
        if round_start:
            self._next_round_delivered = self._delivered
            self._round_count += 1
            self._end_round()

        interval = max(newest_sent_time - prior_first_sent, now - prior_time)
        self._first_sent_time = newest_sent_time
        if interval > 0 and (self.min_rtt is None or interval >= self.min_rtt):
            rate = (self._delivered - prior_delivered) / interval
            if not sample_app_limited or rate >= self.bottleneck_bandwidth:
                self._add_bandwidth_sample(now, rate)

        if round_start and self.state is BbrState.STARTUP and not sample_app_limited:
            self._check_full_bandwidth()
        self._advance_state(now, bytes_in_flight)
        self._update_window(acked_bytes)
        self._update_pacing_rate()

    def on_packets_lost(self, lost_bytes: int) -> None:
        self._round_lost += lost_bytes

    def on_spurious_loss(self, acked_bytes: int) -> None:
        """Packets declared lost were acknowledged after all (reordering): not a congestion signal."""
        self._round_lost = max(self._round_lost - acked_bytes, 0)

    def _add_bandwidth_sample(self, now: float, rate: float) -> None:
        samples = self._bandwidth_samples
        while samples and samples[-1][2] <= rate:
            samples.pop()  # a newer, higher sample outlives it: it can never be the maximum again
        samples.append((self._round_count, now, rate))
        oldest_round, oldest_time = self._round_count - BANDWIDTH_FILTER_ROUNDS, now - BANDWIDTH_FILTER_MIN_TIME
        while samples[0][0] <= oldest_round and samples[0][1] < oldest_time:
            samples.popleft()
        self.bottleneck_bandwidth = samples[0][2]

    def _end_round(self) -> None:
        lost, delivered = self._round_lost, self._round_delivered
        self._round_lost = self._round_delivered = 0
        if lost >= LOSS_GUARD_MIN_PACKETS * self.max_datagram_size and lost > LOSS_THRESHOLD * (lost + delivered):
            self.inflight_hi = max(self.min_window, int(BETA * self.cwnd))
            self._probe_up_step = self.max_datagram_size
            if self.state is BbrState.STARTUP:
                self._enter_drain()
        elif self.inflight_hi is not None:
            self.inflight_hi += self._probe_up_step
            self._probe_up_step *= 2
            if self.inflight_hi > 2 * CWND_GAIN * self.bdp():
                self.inflight_hi = None

    def _check_full_bandwidth(self) -> None:
        if self.bottleneck_bandwidth >= self._full_bandwidth * FULL_BANDWIDTH_GROWTH:
            self._full_bandwidth = self.bottleneck_bandwidth
            self._full_bandwidth_rounds = 0
            return
        self._full_bandwidth_rounds += 1
        if self._full_bandwidth_rounds >= FULL_BANDWIDTH_ROUNDS:
            self._enter_drain()

    def _enter_drain(self) -> None:
        self.state = BbrState.DRAIN
        self.pacing_gain = DRAIN_GAIN

    def _advance_state(self, now: float, bytes_in_flight: int) -> None:
        if self.state is BbrState.DRAIN and bytes_in_flight <= self.bdp():
            self.state = BbrState.PROBE_BW
            self._cycle_index = 2
            self._cycle_stamp = now
            self.pacing_gain = PROBE_BW_GAINS[self._cycle_index]
        elif self.state is BbrState.PROBE_BW:
            min_rtt = self.min_rtt or 0.0
            elapsed = now - self._cycle_stamp > min_rtt
            drained = self.pacing_gain < 1.0 and bytes_in_flight <= self.bdp()
            if elapsed or drained:
                self._cycle_index = (self._cycle_index + 1) % len(PROBE_BW_GAINS)
                self._cycle_stamp = now
                self.pacing_gain = PROBE_BW_GAINS[self._cycle_index]

    def _update_window(self, acked_bytes: int) -> None:
        gain = STARTUP_GAIN if self.state is BbrState.STARTUP else CWND_GAIN
        target = int(gain * self.bdp()) + (2 * self.ack_batch_packets + 3) * self.max_datagram_size
        if self.state is BbrState.STARTUP:
            if self.cwnd < target or self._delivered < INITIAL_WINDOW_PACKETS * self.max_datagram_size:
                self.cwnd += acked_bytes
        else:
            self.cwnd = min(self.cwnd + acked_bytes, target)
        self.cwnd = max(self.cwnd, self.min_window)
        if self.inflight_hi is not None:
            self.cwnd = min(self.cwnd, self.inflight_hi)

    def _update_pacing_rate(self) -> None:
        if not self.min_rtt:
            return
        rate = self.pacing_gain * self.bottleneck_bandwidth
        if self.state is BbrState.STARTUP:
            # Early samples are tiny (a handful of packets per round): pace at least as fast as the
            # window itself allows, so pacing never slows the exponential ramp.
            rate = max(rate, self.pacing_gain * self.cwnd / self.min_rtt)
        # Never slower than the minimum window per round trip. Below that the 1.25 gain phase (one
        # min RTT long) sends less than one extra packet, so it cannot find more bandwidth, while
        # random loss keeps each sample a little under the rate: the estimate would only drift down.
        rate = max(rate, self.min_window / self.min_rtt)
        # In STARTUP the estimate only grows; a low early sample must not slow the ramp.
        if self.state is not BbrState.STARTUP or rate > self.pacing_rate:
            self.pacing_rate = rate


class Pacer:
    """Spaces packets at a rate, allowing a short burst after an idle spell."""

    def __init__(self) -> None:
        self.next_send_time = 0.0

    def may_send(self, now: float) -> bool:
        return now >= self.next_send_time

    def on_sent(self, now: float, size: int, rate: float) -> None:
        self.next_send_time = max(self.next_send_time, now - PACING_BURST_TIME) + size / rate
