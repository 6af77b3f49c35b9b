"""Round-trip time estimation and the probe timeout, exactly as RFC 9002 section 5 and 6.2 give them."""

from __future__ import annotations

# RFC 9002 6.1.2: kGranularity.
TIMER_GRANULARITY = 0.001
# RFC 9002 6.2.2: the RTT assumed before any sample.
INITIAL_RTT = 0.333
# Our acknowledgement delay promise (RFC 9000's default max_ack_delay).
MAX_ACK_DELAY = 0.025


class RttEstimator:
    """Smoothed RTT, variation and minimum from acknowledgement samples."""

    def __init__(self, initial_rtt: float = INITIAL_RTT, max_ack_delay: float = MAX_ACK_DELAY) -> None:
        self.max_ack_delay = max_ack_delay
        self.latest_rtt = 0.0
        self.min_rtt = 0.0
        self.smoothed_rtt = initial_rtt
        self.rttvar = initial_rtt / 2
        self.has_sample = False

    def update(self, latest_rtt: float, ack_delay: float) -> None:
        """Add a sample: the time from sending the largest newly acknowledged packet to its ack."""
        self.latest_rtt = latest_rtt
        if not self.has_sample:
            self.has_sample = True
            self.min_rtt = latest_rtt
            self.smoothed_rtt = latest_rtt
            self.rttvar = latest_rtt / 2
            return
        self.min_rtt = min(self.min_rtt, latest_rtt)
        ack_delay = min(ack_delay, self.max_ack_delay)
        adjusted_rtt = latest_rtt
        # Never let the peer's reported delay push a sample below the minimum ever seen.
        if latest_rtt >= self.min_rtt + ack_delay:
            adjusted_rtt = latest_rtt - ack_delay
        self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.smoothed_rtt - adjusted_rtt)
        self.smoothed_rtt = 0.875 * self.smoothed_rtt + 0.125 * adjusted_rtt

    def loss_delay(self, threshold: float = 9 / 8) -> float:
        """RFC 9002 6.1.2: time after which an unacknowledged packet below an acked one is lost
        (kTimeThreshold is 9/8; a sender that sees reordering may pass more)."""
        return max(threshold * max(self.latest_rtt, self.smoothed_rtt), TIMER_GRANULARITY)

    def probe_timeout(self, backoff: int = 0) -> float:
        """RFC 9002 6.2.1: PTO = srtt + max(4 rttvar, granularity) + max_ack_delay, doubled per backoff."""
        base = self.smoothed_rtt + max(4 * self.rttvar, TIMER_GRANULARITY) + self.max_ack_delay
        return base * (1 << backoff)
