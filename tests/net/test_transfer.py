"""TransferManager pairs driven through the seeded fake link under a fake clock."""

import hashlib
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocsync_tui.net import events, frames
from ocsync_tui.net.blob_source import BytesBlobSource, FileBlobSource
from ocsync_tui.net.partial_store import PartialFile, PartialStore
from ocsync_tui.net.transfer import BLACK_HOLE_PROBE_TIMEOUTS, TransferError, TransferManager
from tests.net.fake_link import LinkConditions
from tests.net.transfer_harness import Pair

PAYLOAD = 1200 - frames.DATA_OVERHEAD


def blob(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def run_transfer(pair: Pair, data: bytes, max_time: float = 120.0):
    transfer_id = pair.giver.core.core.offer(BytesBlobSource(data, name="bundle", kind="git-bundle"), pair.network.now)
    pair.network.run_until(lambda: pair.completed(pair.giver) or pair.giver.events_of(events.TransferFailed), max_time)
    return transfer_id


def test_clean_transfer_arrives_identical_and_both_sides_complete(tmp_path):
    pair = Pair(tmp_path)
    data = blob(300_000)
    transfer_id = run_transfer(pair, data)
    [offered] = pair.taker.events_of(events.TransferOffered)
    assert (offered.size, offered.sha256, offered.name, offered.kind) == (
        len(data), hashlib.sha256(data).digest(), "bundle", "git-bundle",
    )
    [received] = pair.completed(pair.taker)
    [given] = pair.completed(pair.giver)
    assert received.transfer_id == given.transfer_id == transfer_id
    assert Path(received.path).read_bytes() == data and given.path is None
    assert pair.giver.core.core.data_bytes_sent == len(data), "nothing sent twice on a clean link"
    acks = sum(1 for d in pair.taker.sent if d.data[1] == frames.FrameType.ACK)
    assert acks < pair.data_frames_sent(pair.giver) / 3, "acknowledgements are selective and batched"


@pytest.mark.parametrize(
    "conditions",
    [
        LinkConditions(loss=0.05, delay=0.02),
        LinkConditions(loss=0.20, delay=0.005, jitter=0.01),
        LinkConditions(duplicate=0.2, jitter=0.03, delay=0.01),
        LinkConditions(corrupt=0.1, loss=0.05, duplicate=0.05, jitter=0.01),
        LinkConditions(loss=0.03, delay=0.1, rate=2e6, queue_bytes=100_000),
    ],
    ids=["5%-loss", "20%-loss-reorder", "duplicate-reorder", "corrupt-loss-dup", "slow-long-path"],
)
@pytest.mark.parametrize("seed", [1, 2])
def test_impaired_links_deliver_identical_bytes(tmp_path, conditions, seed):
    pair = Pair(tmp_path, conditions, seed=seed)
    data = blob(150_000, seed)
    run_transfer(pair, data)
    [received] = pair.completed(pair.taker)
    assert Path(received.path).read_bytes() == data
    assert pair.completed(pair.giver)


@pytest.mark.parametrize("seed", range(4))
def test_unsealed_corruption_never_yields_a_wrong_file(tmp_path, seed):
    """Without the AEAD stand-in, flipped bits reach the codec: structural damage is a FrameError and
    is dropped; damaged payloads can only end in a clear verification failure, never a wrong file."""
    pair = Pair(tmp_path, LinkConditions(corrupt=0.05, delay=0.01), seed=seed, sealed=False)
    data = blob(100_000, seed)
    run_transfer(pair, data)
    completed = pair.completed(pair.taker)
    if completed:
        assert Path(completed[0].path).read_bytes() == data
    else:
        [failed] = pair.taker.events_of(events.TransferFailed)
        assert "does not match SHA-256" in failed.reason
        assert pair.giver.events_of(events.TransferFailed)
        assert not list((tmp_path / "taker").iterdir()), "the damaged partial is discarded"


def data_sends(node):
    """(time, offset) of every Data frame a node sent."""
    return [
        (sent.time, frames.decode(sent.data[:-4]).offset)
        for sent in node.sent
        if sent.data[1] == frames.FrameType.DATA
    ]


def test_probe_timeout_retransmits_at_exact_deadlines_with_backoff(tmp_path):
    pair = Pair(tmp_path, LinkConditions(delay=0.05))
    data_seen = []

    def drop_first_two_data_frames(datagram):
        if datagram.data[1] == frames.FrameType.DATA:
            data_seen.append(datagram)
            return len(data_seen) > 2
        return True

    pair.network.tap = drop_first_two_data_frames
    run_transfer(pair, blob(500))
    # Offer at 1000.00, Ack and Accept back at 1000.10: one RTT sample of 0.1 s (srtt 0.1, rttvar
    # 0.05), Data sent at once. PTO = 0.1 + 4 * 0.05 + 0.025 = 0.325 s, doubled after each probe.
    times = [time for time, _ in data_sends(pair.giver)]
    assert times == pytest.approx([1000.10, 1000.425, 1001.075], abs=1e-9)
    assert pair.completed(pair.giver) and pair.completed(pair.taker)


def test_packet_threshold_loss_is_resent_the_moment_the_ack_arrives(tmp_path):
    pair = Pair(tmp_path, LinkConditions(delay=0.05))
    dropped = []

    def drop_first_data_frame(datagram):
        if datagram.data[1] == frames.FrameType.DATA and not dropped:
            dropped.append(datagram)
            return False
        return True

    pair.network.tap = drop_first_data_frame
    run_transfer(pair, blob(20 * PAYLOAD))
    lost_number = frames.decode(dropped[0].data[:-4]).packet_number
    sends = data_sends(pair.giver)
    resend_time = next(time for time, offset in sends[1:] if offset == 0)
    arrivals = [(r.time + 0.05, r.data) for r in pair.giver.received]
    acks = [(time, frames.decode(data[:-4])) for time, data in arrivals if data[1] == frames.FrameType.ACK]
    first_gap_ack = next(time for time, ack in acks if len(ack.ranges) > 1)
    threshold_ack = next(time for time, ack in acks if ack.ranges[0][1] - 1 >= lost_number + 3)
    assert first_gap_ack < threshold_ack, "one ack showing the gap is not enough"
    assert resend_time == threshold_ack, "lost, and resent, when an ack covers a packet 3 numbers later"
    assert sum(1 for _, offset in sends if offset == 0) == 2


def goodput(tmp_path, loss: float, seed: int) -> float:
    conditions = LinkConditions(loss=loss, delay=0.005, rate=5e6, queue_bytes=200_000)
    pair = Pair(tmp_path, conditions, seed=seed)
    data = blob(2_500_000, seed)
    start = pair.network.now
    run_transfer(pair, data)
    assert Path(pair.completed(pair.taker)[0].path).read_bytes() == data
    return len(data) / (pair.network.now - start)


def test_random_loss_does_not_collapse_the_rate(tmp_path):
    clean = goodput(tmp_path / "clean", 0.0, seed=5)
    lossy = goodput(tmp_path / "lossy", 0.03, seed=5)
    assert clean > 0.7 * 5e6, "the controller fills the 5 MB/s bottleneck"
    assert lossy >= 0.5 * clean, f"3% random loss at 10 ms RTT: {lossy:.0f} B/s vs {clean:.0f} B/s"


def test_taker_restart_resumes_with_only_missing_bytes(tmp_path):
    pair = Pair(tmp_path, LinkConditions(delay=0.01, rate=4e6))
    data = blob(3_000_000)
    taker = pair.taker
    pair.giver.core.core.offer(BytesBlobSource(data), pair.network.now)
    pair.network.run_until(lambda: pair.received_over(1_500_000), 30)
    [incoming] = taker.core.core._incoming.values()
    partial = incoming.partial
    partial.checkpoint()  # the last checkpoint before the crash
    partial.wait_recorded()
    recorded = partial.bytes_present
    pair.network.run_for(0.05)  # more arrives but is never recorded
    sent_before = pair.giver.core.core.data_bytes_sent
    pair.restart(taker)
    pair.network.run_until(lambda: pair.completed(pair.giver), 60)
    assert Path(pair.completed(taker)[0].path).read_bytes() == data
    resent = pair.giver.core.core.data_bytes_sent - sent_before
    assert len(taker.events_of(events.TransferOffered)) == 2, "the giver offered again after UnknownTransfer"
    assert resent <= len(data) - recorded + 400_000, "only what the taker had not recorded, plus what was in flight"


def test_giver_restart_resumes_when_the_engine_offers_again(tmp_path):
    pair = Pair(tmp_path, LinkConditions(delay=0.01, rate=4e6))
    data = blob(3_000_000)
    pair.giver.core.core.offer(BytesBlobSource(data), pair.network.now)
    pair.network.run_until(lambda: pair.received_over(1_500_000), 30)
    pair.restart(pair.giver)
    pair.network.run_for(2.0)  # the taker's checkpoint timer records what it had
    new_id = pair.giver.core.core.offer(BytesBlobSource(data), pair.network.now)
    pair.network.run_until(lambda: pair.completed(pair.giver), 60)
    assert Path(pair.completed(pair.taker, new_id)[0].path).read_bytes() == data
    assert pair.giver.core.core.data_bytes_sent <= len(data) - 1_500_000 + 100_000


class SlowPartialFile(PartialFile):
    """A disk that takes RATE bytes per second: it refuses writes until the previous ones are done."""

    RATE = 200_000.0

    def __init__(self, clock, *args):
        super().__init__(*args)
        self.clock = clock
        self.busy_until = 0.0

    def ready(self, now):
        return now >= self.busy_until

    def write(self, offset, data):
        self.busy_until = max(self.busy_until, self.clock.now) + len(data) / self.RATE
        return super().write(offset, data)


class SlowStore(PartialStore):
    def __init__(self, directory, clock):
        super().__init__(directory)
        self.clock = clock

    def open(self, peer, sha256, size):
        paths = (self._path(peer, sha256, suffix) for suffix in (".part", ".bitmap", ".blob"))
        return SlowPartialFile(self.clock, *paths, sha256, size)


def test_slow_disk_shrinks_the_window_and_is_never_flooded(tmp_path):
    pair = Pair(tmp_path, LinkConditions(delay=0.01))
    taker = pair.taker.core.core
    taker.receive_buffer = 50_000
    taker.store = SlowStore(tmp_path / "slow", pair.network.clock)
    peak = []
    original = taker._on_data

    def watch(frame, now):
        result = original(frame, now)
        peak.append(taker._queued_bytes)
        return result

    taker._on_data = watch
    data = blob(400_000)
    start = pair.network.now
    run_transfer(pair, data)
    assert Path(pair.completed(pair.taker)[0].path).read_bytes() == data
    assert max(peak) <= 50_000, "the receive buffer bound holds"
    assert pair.network.now - start >= len(data) / SlowPartialFile.RATE * 0.95, "paced by the disk"
    windows = [frames.decode(d.data[:-4]).window for d in pair.taker.sent if d.data[1] == frames.FrameType.ACK]
    assert min(windows) < 25_000, "the advertised window shrank while the disk lagged"
    loss_ratio = pair.giver.core.core.data_bytes_sent / len(data)
    assert loss_ratio < 1.3, "the giver respected the window instead of overrunning the buffer"


def test_two_transfers_share_the_link_fairly(tmp_path):
    pair = Pair(tmp_path, LinkConditions(delay=0.005, rate=2e6))
    giver = pair.giver.core.core
    first = giver.offer(BytesBlobSource(blob(1_000_000, 1)), pair.network.now)
    second = giver.offer(BytesBlobSource(blob(1_000_000, 2)), pair.network.now)
    pair.network.run_until(lambda: len(pair.completed(pair.taker)) >= 1, 60)
    progress = {e.transfer_id: e.bytes_done for e in pair.taker.events_of(events.TransferProgress)}
    done = {e.transfer_id for e in pair.completed(pair.taker)}
    other = (first if second in done else second)
    assert progress[other] > 0.85 * 1_000_000, "the other transfer got an equal share meanwhile"
    pair.network.run_until(lambda: len(pair.completed(pair.giver)) == 2, 60)


def test_taker_cancels_and_giver_hears_it(tmp_path):
    pair = Pair(tmp_path, LinkConditions(delay=0.01, rate=1e6))
    transfer_id = pair.giver.core.core.offer(BytesBlobSource(blob(2_000_000)), pair.network.now)
    pair.network.run_for(0.5)
    assert pair.taker.core.core.cancel(transfer_id, pair.network.now, "user cancelled")
    pair.network.run_until(lambda: pair.giver.events_of(events.TransferCancelled), 10)
    [cancelled] = pair.giver.events_of(events.TransferCancelled)
    assert (cancelled.transfer_id, cancelled.reason, cancelled.outgoing) == (transfer_id, "user cancelled", True)
    assert not list((tmp_path / "taker").iterdir()), "the partial file is removed"
    sent = pair.giver.core.core.data_bytes_sent
    pair.network.run_for(5)
    assert pair.giver.core.core.data_bytes_sent == sent and pair.network.run_until(lambda: False, 1) is False


def test_giver_cancels_and_taker_hears_it(tmp_path):
    pair = Pair(tmp_path, LinkConditions(delay=0.01, rate=1e6))
    transfer_id = pair.giver.core.core.offer(BytesBlobSource(blob(2_000_000)), pair.network.now)
    pair.network.run_for(0.5)
    assert pair.giver.core.core.cancel(transfer_id, pair.network.now)
    pair.network.run_until(lambda: pair.taker.events_of(events.TransferCancelled), 10)
    assert pair.taker.events_of(events.TransferCancelled)[0].transfer_id == transfer_id
    assert not list((tmp_path / "taker").iterdir())
    assert not pair.giver.core.core.cancel(transfer_id, pair.network.now), "unknown now"


def test_decline_reaches_the_giver(tmp_path):
    pair = Pair(tmp_path, auto_accept=False)
    transfer_id = pair.giver.core.core.offer(BytesBlobSource(b"x" * 5000), pair.network.now)
    pair.network.run_until(lambda: pair.taker.events_of(events.TransferOffered), 5)
    pair.taker.core.core.decline(transfer_id, "folder not shared with you", pair.network.now)
    pair.network.run_until(lambda: pair.giver.events_of(events.TransferCancelled), 5)
    assert pair.giver.events_of(events.TransferCancelled)[0].reason == "folder not shared with you"
    with pytest.raises(TransferError, match="not waiting"):
        pair.taker.core.core.accept(transfer_id, pair.network.now)


def test_file_source_and_already_received_blob(tmp_path):
    data = blob(50_000)
    source_path = tmp_path / "bundle.bin"
    source_path.write_bytes(data)
    pair = Pair(tmp_path)
    with FileBlobSource(source_path) as source:
        pair.giver.core.core.offer(source, pair.network.now)
        pair.network.run_until(lambda: pair.completed(pair.giver), 10)
        # Offered again (the giver never heard Done, say): the verified file is already here.
        pair.restart(pair.giver)
        pair.giver.core.core.offer(source, pair.network.now)
        pair.network.run_until(lambda: len(pair.completed(pair.giver)) == 2, 10)
    assert pair.giver.core.core.data_bytes_sent == 0
    assert [Path(e.path).read_bytes() == data for e in pair.completed(pair.taker)] == [True, True]


def test_offer_limits_are_clear_errors(tmp_path):
    manager = TransferManager(b"k" * 32, PartialStore(tmp_path))
    with pytest.raises(TransferError, match="metadata"):
        manager.offer(BytesBlobSource(b"x", metadata=bytes(10_000)), 0.0)
    with pytest.raises(TransferError, match="name or kind"):
        manager.offer(BytesBlobSource(b"x", name="n" * 300), 0.0)


def test_progress_is_reported_at_most_every_100_ms(tmp_path):
    pair = Pair(tmp_path, LinkConditions(delay=0.01, rate=1e6))
    start = pair.network.now
    run_transfer(pair, blob(1_000_000))
    duration = pair.network.now - start
    for node in (pair.giver, pair.taker):
        progress = node.events_of(events.TransferProgress)
        assert 5 <= len(progress) <= duration / 0.1 + 1
        assert all(b.bytes_done >= a.bytes_done for a, b in zip(progress, progress[1:]))
        assert 0.3e6 < max(e.rate_bps for e in progress) < 1.5e6


def test_blob_file_shrinking_under_the_giver_fails_the_transfer_cleanly(tmp_path):
    source_path = tmp_path / "bundle.bin"
    source_path.write_bytes(blob(2_000_000))
    pair = Pair(tmp_path, LinkConditions(delay=0.01, rate=1e6))
    with FileBlobSource(source_path) as source:
        transfer_id = pair.giver.core.core.offer(source, pair.network.now)
        pair.network.run_for(0.3)
        with open(source_path, "r+b") as stream:
            stream.truncate(1000)
        pair.network.run_until(lambda: pair.taker.events_of(events.TransferCancelled), 10)
    [failed] = pair.giver.events_of(events.TransferFailed)
    assert failed.transfer_id == transfer_id and "shrank" in failed.reason
    assert "shrank" in pair.taker.events_of(events.TransferCancelled)[0].reason
    assert not list((tmp_path / "taker").iterdir())


def test_after_a_long_outage_the_transfer_resumes_within_the_probe_cap(tmp_path):
    pair = Pair(tmp_path, LinkConditions(delay=0.01, rate=1e6))
    pair.giver.core.core.offer(BytesBlobSource(blob(1_000_000)), pair.network.now)
    pair.network.run_until(lambda: pair.received_over(300_000), 30)
    pair.network.tap = lambda datagram: False  # the path is down for ten minutes
    pair.network.run_for(600)
    pair.network.tap = None
    back = pair.network.now
    assert pair.network.run_until(lambda: pair.completed(pair.giver), 60)
    assert pair.network.now - back < 10.0 + 2.0, "probes kept coming at most every 10 s"


def test_reordering_widens_the_loss_thresholds_instead_of_collapsing_the_rate(tmp_path):
    """Jitter of 1 ms on a 4 ms path reorders many packets: the first "losses" it causes are proved
    spurious by later acks, the thresholds widen, and the rate stays near the reorder-free one."""
    rates = {}
    for jitter in (0.0, 0.001):
        pair = Pair(tmp_path / str(jitter), LinkConditions(delay=0.002, jitter=jitter, rate=20e6), seed=4)
        data = blob(6_000_000, 4)
        start = pair.network.now
        run_transfer(pair, data)
        assert Path(pair.completed(pair.taker)[0].path).read_bytes() == data
        rates[jitter] = len(data) / (pair.network.now - start)
        giver = pair.giver.core.core
    assert giver._packet_threshold > 3
    assert rates[0.001] >= 0.7 * rates[0.0], rates


small_ids = st.integers(0, 3)
hostile_frames = st.one_of(
    st.builds(frames.Data, st.integers(0, 50), small_ids, st.integers(0, 6000), st.binary(min_size=1, max_size=300)),
    st.builds(
        frames.Ack, st.floats(0, 1), st.integers(0, 1 << 64 - 1),
        st.lists(st.integers(0, 60), min_size=2, max_size=8, unique=True).map(
            lambda bounds: tuple(
                (low, high) for high, low in zip(*[iter(sorted(bounds, reverse=True))] * 2) if low < high
            )
        ).filter(bool),
    ),
    st.builds(frames.Offer, st.integers(0, 50), small_ids, st.integers(0, 6000),
              st.sampled_from([bytes(32), b"\x01" * 32]), st.just("n"), st.just("k"), st.just(b"")),
    st.builds(frames.Accept, st.integers(0, 50), small_ids,
              st.lists(st.integers(0, 7000), max_size=6, unique=True).map(
                  lambda bounds: tuple(zip(*[iter(sorted(bounds))] * 2))
              ).filter(lambda pairs: all(a < b for a, b in pairs) and all(
                  b1 < a2 for (_, b1), (a2, _) in zip(pairs, pairs[1:])))),
    st.builds(frames.Cancel, st.integers(0, 50), small_ids, st.booleans(), st.sampled_from(frames.CancelCode),
              st.just("x")),
    st.builds(frames.Done, st.integers(0, 50), small_ids),
    st.builds(frames.UnknownTransfer, small_ids),
    st.binary(max_size=40),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(hostile_frames, max_size=40))
def test_any_frame_sequence_from_a_peer_never_crashes_the_core(tmp_path_factory, sequence):
    """A buggy or hostile (but authenticated) peer can waste our time, never crash us or make us
    write outside the transfer directory."""
    directory = tmp_path_factory.mktemp("hostile")
    ids = iter(range(1, 1000))
    manager = TransferManager(b"P" * 32, PartialStore(directory / "store"),
                              random_bytes=lambda n: next(ids).to_bytes(n, "big"))
    manager.offer(BytesBlobSource(blob(5000)), 0.0)
    now = 0.0
    for item in sequence:
        now += 0.01
        manager.receive_frame(item if isinstance(item, bytes) else frames.encode(item), now)
        while (event := manager.next_event()) is not None:
            if isinstance(event, events.TransferOffered):
                manager.accept(event.transfer_id, now)
        timer = manager.get_timer()
        if timer is not None and timer <= now:
            manager.handle_timer(now)
        manager.frames_to_send(now, 1200)
    manager.close()
    assert {path.parent for path in directory.rglob("*") if path.is_file()} <= {directory / "store"}


def test_frame_size_shrinking_mid_transfer_recuts_what_was_lost(tmp_path):
    """The path MTU drops from 8000 to 1200 with large frames in flight: they are lost, and their
    bytes go again in frames that fit."""
    pair = Pair(tmp_path, LinkConditions(delay=0.01, rate=5e6), max_frame_size=8000)
    data = blob(2_000_000)
    pair.giver.core.core.offer(BytesBlobSource(data), pair.network.now)
    pair.network.run_until(lambda: pair.received_over(500_000), 30)
    pair.network.tap = lambda datagram: len(datagram.data) <= 1200 + 4  # frame + CRC trailer
    pair.giver.core.max_frame_size = pair.taker.core.max_frame_size = 1200
    assert pair.network.run_until(lambda: pair.completed(pair.giver), 60)
    assert Path(pair.completed(pair.taker)[0].path).read_bytes() == data


def test_both_peers_give_at_once(tmp_path):
    pair = Pair(tmp_path, LinkConditions(delay=0.01, loss=0.02, rate=3e6), seed=9)
    there, back = blob(800_000, 1), blob(600_000, 2)
    pair.giver.core.core.offer(BytesBlobSource(there), pair.network.now)
    pair.taker.core.core.offer(BytesBlobSource(back), pair.network.now)
    assert pair.network.run_until(lambda: len(pair.completed(pair.giver)) == len(pair.completed(pair.taker)) == 2, 60)
    received_here = [e for e in pair.completed(pair.giver) if not e.outgoing]
    received_there = [e for e in pair.completed(pair.taker) if not e.outgoing]
    assert Path(received_here[0].path).read_bytes() == back
    assert Path(received_there[0].path).read_bytes() == there


def test_repeated_probe_timeouts_are_reported_once_as_a_suspected_black_hole(tmp_path):
    pair = Pair(tmp_path, LinkConditions(delay=0.01, rate=4e6))
    giver = pair.giver.core.core
    giver.offer(BytesBlobSource(blob(3_000_000)), pair.network.now)
    pair.network.run_until(lambda: pair.received_over(500_000), 30)
    pair.network.conditions.loss = 1.0  # the path stops carrying the datagrams
    assert pair.network.run_until(lambda: giver._pto_count == BLACK_HOLE_PROBE_TIMEOUTS - 1, 30)
    assert not giver.take_black_hole_suspicion()
    assert pair.network.run_until(lambda: giver._pto_count == BLACK_HOLE_PROBE_TIMEOUTS, 30)
    assert giver.take_black_hole_suspicion()
    pair.network.run_until(lambda: giver._pto_count == BLACK_HOLE_PROBE_TIMEOUTS + 1, 60)
    assert not giver.take_black_hole_suspicion(), "once per silence"
    pair.network.conditions.loss = 0.0
    assert pair.network.run_until(lambda: bool(pair.completed(pair.giver)), 120)
