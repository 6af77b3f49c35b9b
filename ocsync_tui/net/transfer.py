"""Reliable transfer of whole blobs between two authenticated peers: one TransferManager per session.

Sans-I/O: the owner feeds it plaintext frames (`receive_frame(frame, now)`) and asks for frames to
send (`frames_to_send(now, max_frame_size)`, which returns only what congestion control, pacing and
the peer's receive window allow now), fires `handle_timer(now)` at `get_timer()` and drains events
(ocsync_tui/net/events.py) with `next_event()`. Commands: `offer`, `accept`, `decline`, `cancel`,
`close`. Both peers run one; each can give and take at once.

Protocol (frames in ocsync_tui/net/frames.py):
- The giver sends Offer(sha256, size, name, kind, metadata); the taker's owner answers through
  `accept` (the taker replies Accept listing the byte ranges its partial file already holds, so a
  resumed transfer sends only what is missing) or `decline`.
- Data frames carry byte ranges of any length (the path MTU may change mid-transfer or across a
  restart). The taker writes them into a PartialFile and, once it holds every byte and the SHA-256
  matches, hands the file on (TransferCompleted with its path) and sends Done; the giver reports
  TransferCompleted on Done. A mismatch fails both sides (TransferFailed) and discards the partial.
- Every frame except Ack carries a fresh packet number. Acks are selective (the newest ranges of
  received numbers), sent every ACK_EVERY ack-eliciting frames, at once on reordering, or after at
  most MAX_ACK_DELAY, and carry the taker's receive window. Loss detection follows RFC 9002 (packet
  threshold 3, time threshold 9/8 RTT, both widened when an ack proves a "loss" was reordering; PTO
  with exponential backoff, capped at MAX_PROBE_INTERVAL); what a lost frame carried is sent again
  under a new number. Congestion control and pacing: congestion.BbrController.
- The taker's receive window is the room left in its write buffer: Data arriving while the partial
  file is not `ready` (a slow disk) is buffered, and beyond the buffer dropped unacknowledged.
- Packet numbers start at a random 62-bit value, so a peer that restarted is recognised and its new
  numbers are not taken for duplicates of the old ones.
- Recovery without state: a taker that does not know a transfer (it restarted) answers its Data with
  UnknownTransfer, and the giver offers again; a giver whose data is all acknowledged but that hears no
  Done offers again after a patience that doubles each time; a taker answers a repeated Offer with
  Accept (its current holdings), or Done if it already finished.
- Transfers with data to send share the window round-robin, one frame at a time. Either side may
  cancel; the peer reports TransferCancelled.
- Datagram size: the owner tells the manager each size path MTU discovery confirms
  (`set_datagram_size`). BLACK_HOLE_PROBE_TIMEOUTS probe timeouts in a row suggest the path stopped
  carrying that size; `take_black_hole_suspicion()` reports it once per silence, so the owner can
  fall back to the base size (RFC 8899 black-hole detection) while probes go out at the new size.
"""

from __future__ import annotations

import enum
import os
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from ocsync_tui.errors import OcsyncError
from ocsync_tui.net import events, frames
from ocsync_tui.net.blob_source import BlobSource, BlobSourceError
from ocsync_tui.net.congestion import BbrController, Pacer
from ocsync_tui.net.frames import CancelCode, FrameError
from ocsync_tui.net.partial_store import BlobVerificationError, PartialFile, PartialStore, PartialStoreError
from ocsync_tui.net.ranges import RangeSet
from ocsync_tui.net.rtt import MAX_ACK_DELAY, RttEstimator

PACKET_THRESHOLD = 3
TIME_THRESHOLD = 9 / 8
# RFC 9002 6.1 lets the thresholds adapt: each loss that an ack later proves was only reordering
# widens them (up to these caps), as RACK (RFC 8985) widens its reordering window.
MAX_PACKET_THRESHOLD = 1000
MAX_TIME_THRESHOLD = 2.0
DECLARED_LOST_REMEMBERED = 1024
# Packet numbers this far from the largest received come from a restarted peer (starts are random
# 62-bit numbers, so two incarnations land this close with probability 2**-21).
PEER_RESTART_DISTANCE = 1 << 40
# Early in a session every 2nd frame is acknowledged so the controller's window opens quickly.
ACK_EVERY_EARLY, ACK_EVERY = 2, 8
EARLY_PACKETS = 100
# Only the newest ranges are reported: older gaps were reported before, and if those acks were lost
# the giver merely resends a frame the taker had.
ACK_RANGES_REPORTED = 16
RANGES_REMEMBERED = 256
DEFAULT_RECEIVE_BUFFER = 16 << 20
CHECKPOINT_BYTES = 8 << 20
CHECKPOINT_INTERVAL = 1.0
PROGRESS_INTERVAL = 0.1
WRITE_RETRY_INTERVAL = 0.001
OFFER_PATIENCE = 30.0
MIN_DONE_PATIENCE = 0.2
MAX_PATIENCE = 60.0
UNKNOWN_REPLY_INTERVAL = 0.1
# The probe timeout doubles while the peer is silent, but never beyond this: a peer back after a long
# outage hears from us within seconds.
MAX_PROBE_INTERVAL = 10.0
BLACK_HOLE_PROBE_TIMEOUTS = 3
FINISHED_REMEMBERED = 1024

# Fields of a sent-packet record (a tuple: one is built per frame sent).
SENT_TIME, SIZE, TRANSFER, OFFSET, LENGTH, CONTROL, SNAPSHOT = range(7)
ControlFrame = tuple[Callable[..., bytes], tuple[Any, ...]]


class TransferError(OcsyncError):
    pass


class _Phase(enum.Enum):
    OFFERING = "offering"  # giver: waiting for Accept
    SENDING = "sending"
    OFFERED = "offered"  # taker: waiting for the owner to accept
    RECEIVING = "receiving"


class _Outgoing:
    __slots__ = ("transfer_id", "source", "phase", "to_send", "outstanding", "acked_bytes", "wake_at",
                 "patience_doublings", "progress_time", "progress_bytes")

    def __init__(self, transfer_id: int, source: BlobSource, now: float) -> None:
        self.transfer_id = transfer_id
        self.source = source
        self.phase = _Phase.OFFERING
        self.to_send: deque[list[int]] = deque()
        self.outstanding = 0
        self.acked_bytes = 0
        self.wake_at: float | None = now + OFFER_PATIENCE
        self.patience_doublings = 0
        self.progress_time = now
        self.progress_bytes = 0


class _Incoming:
    __slots__ = ("transfer_id", "offer", "phase", "partial", "progress_time", "progress_bytes")

    def __init__(self, offer: frames.Offer, now: float) -> None:
        self.transfer_id = offer.transfer_id
        self.offer = offer
        self.phase = _Phase.OFFERED
        self.partial: PartialFile | None = None
        self.progress_time = now
        self.progress_bytes = 0


class TransferManager:
    def __init__(
        self,
        public_key: bytes,
        store: PartialStore,
        *,
        receive_buffer: int = DEFAULT_RECEIVE_BUFFER,
        max_datagram_size: int = 1200,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        """`public_key` names the peer (partial files are keyed by it); tests pass a seeded `random_bytes`."""
        self.public_key = public_key
        self.store = store
        self.receive_buffer = receive_buffer
        self._random_bytes = random_bytes
        self.rtt = RttEstimator()
        self.congestion = BbrController(max_datagram_size, self.rtt.smoothed_rtt, ACK_EVERY)
        self.pacer = Pacer()
        self._events: deque[Any] = deque()

        # Giving: packets in flight, loss detection, probe timeout.
        # Numbers start at random so the peer tells this incarnation from one before a restart.
        self._next_packet_number = int.from_bytes(random_bytes(8), "big") >> 2
        self._sent: dict[int, tuple[Any, ...]] = {}
        self.bytes_in_flight = 0
        self._largest_acked = -1
        self._packet_threshold = PACKET_THRESHOLD
        self._time_threshold = TIME_THRESHOLD
        # Packets declared lost -> (size, how far below the largest acked they were then).
        self._declared_lost: dict[int, tuple[int, int]] = {}
        self._loss_time: float | None = None
        self._pto_count = 0
        self._last_ack_eliciting_time = 0.0
        self._probes_owed = 0
        self._black_hole_suspected = False
        self._control: deque[ControlFrame] = deque()
        # When frames became ready to go out at once (acks, control frames, probes): get_timer reports
        # it, so an owner that only polls at timer deadlines still sends them without delay.
        self._send_due: float | None = None
        self.peer_window = DEFAULT_RECEIVE_BUFFER
        self._outgoing: dict[int, _Outgoing] = {}
        self._send_order: deque[int] = deque()
        self.data_bytes_sent = 0

        # Taking: received packet numbers, acknowledgement scheduling, buffered writes.
        self._received = RangeSet()
        self._largest_received = -1
        self._largest_received_time = 0.0
        self._unacked_count = 0
        self._received_count = 0
        self._ack_deadline: float | None = None
        self._ack_now = False
        self._advertised_window = receive_buffer
        self._write_queue: deque[tuple[_Incoming, int, bytes]] = deque()
        self._queued_bytes = 0
        self._write_retry_at: float | None = None
        self._checkpoint_at: float | None = None
        self._incoming: dict[int, _Incoming] = {}
        self._incoming_by_sha: dict[bytes, int] = {}
        # Finished incoming transfer ids -> True when completed, False when cancelled or failed.
        self._finished: OrderedDict[int, bool] = OrderedDict()
        self._unknown_replied: dict[int, float] = {}
        self.frames_dropped = 0

    # --- commands -------------------------------------------------------------------------------

    def offer(self, source: BlobSource, now: float) -> int:
        """Offer a blob to the peer; return its transfer id. Offering the same SHA-256 again while it
        is in progress returns the existing id. Keep the source until TransferCompleted."""
        for outgoing in self._outgoing.values():
            if outgoing.source.sha256 == source.sha256:
                return outgoing.transfer_id
        for text, limit in ((source.name, frames.MAX_NAME_BYTES), (source.kind, frames.MAX_KIND_BYTES)):
            if len(text.encode("utf-8")) > limit:
                raise TransferError(f"a transfer's name or kind is limited to {limit} bytes: {text[:40]!r}")
        if len(source.metadata) > frames.MAX_METADATA_BYTES:
            raise TransferError(f"transfer metadata is limited to {frames.MAX_METADATA_BYTES} bytes")
        transfer_id = int.from_bytes(self._random_bytes(8), "big")
        while transfer_id in self._outgoing or transfer_id in self._incoming:
            transfer_id = int.from_bytes(self._random_bytes(8), "big")
        outgoing = _Outgoing(transfer_id, source, now)
        self._outgoing[transfer_id] = outgoing
        self._send_order.append(transfer_id)
        self._queue_offer(outgoing)
        self._check_send_due(now)
        return transfer_id

    def accept(self, transfer_id: int, now: float) -> None:
        """Accept an offered blob: resume its partial file, or finish at once if it is already here."""
        self._accept(transfer_id)
        self._check_send_due(now)

    def _accept(self, transfer_id: int) -> None:
        incoming = self._incoming.get(transfer_id)
        if incoming is None or incoming.phase is not _Phase.OFFERED:
            raise TransferError(f"transfer {transfer_id:x} is not waiting for an answer")
        offer = incoming.offer
        done_path = self.store.completed_path(self.public_key, offer.sha256)
        if done_path is not None:
            self._finish_incoming(incoming, completed=True)
            self._events.append(events.TransferCompleted(self.public_key, transfer_id, False, offer.sha256, done_path))
            self._control.append((frames.encode_done, (transfer_id,)))
            return
        try:
            incoming.partial = self.store.open(self.public_key, offer.sha256, offer.size)
        except PartialStoreError as error:
            self._fail_incoming(incoming, str(error))
            return
        incoming.phase = _Phase.RECEIVING
        incoming.progress_bytes = incoming.partial.bytes_present
        if incoming.partial.is_complete:
            self._complete_incoming(incoming)
        else:
            self._control.append((frames.encode_accept, (transfer_id, tuple(incoming.partial.have))))

    def decline(self, transfer_id: int, reason: str, now: float) -> None:
        incoming = self._incoming.get(transfer_id)
        if incoming is None or incoming.phase is not _Phase.OFFERED:
            raise TransferError(f"transfer {transfer_id:x} is not waiting for an answer")
        self._finish_incoming(incoming, completed=False)
        self._control.append((frames.encode_cancel, (transfer_id, False, CancelCode.DECLINED, reason)))
        self._check_send_due(now)

    def cancel(self, transfer_id: int, now: float, reason: str = "cancelled") -> bool:
        """Cancel a transfer in either direction; a taker's partial file is deleted. False if unknown."""
        known = self._cancel(transfer_id, reason)
        self._check_send_due(now)
        return known

    def _cancel(self, transfer_id: int, reason: str) -> bool:
        outgoing = self._outgoing.pop(transfer_id, None)
        if outgoing is not None:
            self._send_order.remove(transfer_id)
            self._control.append((frames.encode_cancel, (transfer_id, True, CancelCode.CANCELLED, reason)))
            return True
        incoming = self._incoming.get(transfer_id)
        if incoming is not None:
            if incoming.partial is not None:
                incoming.partial.discard()
                incoming.partial = None
            self._finish_incoming(incoming, completed=False)
            self._control.append((frames.encode_cancel, (transfer_id, False, CancelCode.CANCELLED, reason)))
            return True
        return False

    def set_datagram_size(self, size: int) -> None:
        """The path carries datagrams of `size` bytes now: congestion windows are counted in them."""
        self.congestion.max_datagram_size = size

    def take_black_hole_suspicion(self) -> bool:
        """True once when BLACK_HOLE_PROBE_TIMEOUTS probe timeouts came in a row (nothing acked)."""
        suspected, self._black_hole_suspected = self._black_hole_suspected, False
        return suspected

    def close(self) -> None:
        """Record what has been received and close partial files (before the owner exits)."""
        self._drain_writes(float("-inf"), force=True)
        for incoming in self._incoming.values():
            if incoming.partial is not None:
                try:
                    incoming.partial.wait_recorded()
                    incoming.partial.checkpoint()
                except OSError:
                    pass  # unrecorded data is simply received again
                incoming.partial.close()

    def next_event(self) -> Any:
        return self._events.popleft() if self._events else None

    # --- frames in --------------------------------------------------------------------------------

    def receive_frame(self, data: bytes, now: float) -> None:
        self._receive_frame(data, now)
        self._check_send_due(now)

    def _receive_frame(self, data: bytes, now: float) -> None:
        try:
            frame = frames.decode(data)
        except FrameError:
            self.frames_dropped += 1
            return
        if self._write_queue:
            self._drain_writes(now)
        kind = type(frame)
        if kind is frames.Ack:
            self._on_ack(frame, now)
            return
        if kind is frames.UnknownTransfer:
            self._on_unknown_transfer(frame, now)
            return
        packet_number = getattr(frame, "packet_number", None)
        if packet_number is None:
            self.frames_dropped += 1  # keepalive and PMTU frames belong to other cores
            return
        if abs(packet_number - self._largest_received) > PEER_RESTART_DISTANCE and self._largest_received >= 0:
            # A number from another incarnation of the peer: it restarted, its old numbers mean nothing.
            self._received = RangeSet()
            self._largest_received = packet_number - 1
        elif packet_number <= self._largest_received and packet_number in self._received:
            self._ack_now = True  # our ack was lost: say it again
            return
        if kind is frames.Data:
            if not self._on_data(frame, now):
                return
        elif kind is frames.Offer:
            self._on_offer(frame, now)
        elif kind is frames.Accept:
            self._on_accept(frame, now)
        elif kind is frames.Cancel:
            self._on_cancel(frame)
        elif kind is frames.Done:
            self._on_done(frame)
        self._note_received(packet_number, now, immediate=kind is not frames.Data)

    def _note_received(self, packet_number: int, now: float, immediate: bool) -> None:
        received = self._received
        if packet_number != self._largest_received + 1:
            immediate = True  # reordering or a gap: tell the giver at once, it speeds loss detection
        received.add(packet_number, packet_number + 1)
        if len(received) > RANGES_REMEMBERED:
            received.drop_oldest(RANGES_REMEMBERED)
        if packet_number > self._largest_received:
            self._largest_received = packet_number
            self._largest_received_time = now
        self._received_count += 1
        self._unacked_count += 1
        every = ACK_EVERY_EARLY if self._received_count < EARLY_PACKETS else ACK_EVERY
        if immediate or self._unacked_count >= every:
            self._ack_now = True
        elif self._ack_deadline is None:
            self._ack_deadline = now + MAX_ACK_DELAY

    def _on_data(self, frame: frames.Data, now: float) -> bool:
        """Take a Data frame; False if it must not be acknowledged (no room to buffer it)."""
        incoming = self._incoming.get(frame.transfer_id)
        if incoming is None or incoming.phase is not _Phase.RECEIVING:
            if incoming is None and frame.transfer_id not in self._finished:
                last = self._unknown_replied.get(frame.transfer_id)
                if last is None or now - last >= UNKNOWN_REPLY_INTERVAL:
                    if len(self._unknown_replied) >= FINISHED_REMEMBERED:
                        self._unknown_replied.clear()
                    self._unknown_replied[frame.transfer_id] = now
                    self._control.appendleft((frames.encode_unknown_transfer, (frame.transfer_id,)))
            return True
        if frame.offset + len(frame.payload) > incoming.offer.size:
            return True  # a peer bug; acknowledging it stops the resends
        if self._write_queue or not incoming.partial.ready(now):
            if self._queued_bytes + len(frame.payload) > self.receive_buffer:
                return False
            self._write_queue.append((incoming, frame.offset, frame.payload))
            self._queued_bytes += len(frame.payload)
            self._write_retry_at = now + WRITE_RETRY_INTERVAL
            return True
        self._store(incoming, frame.offset, frame.payload, now)
        return True

    def _store(self, incoming: _Incoming, offset: int, payload: bytes, now: float) -> None:
        partial = incoming.partial
        try:
            partial.write(offset, payload)
            if partial.unrecorded_bytes >= CHECKPOINT_BYTES:
                partial.checkpoint()
        except (OSError, PartialStoreError) as error:
            reason = f"cannot write the received data: {getattr(error, 'strerror', None) or error}"
            partial.close()
            self._fail_incoming(incoming, reason)
            return
        if self._checkpoint_at is None:
            self._checkpoint_at = now + CHECKPOINT_INTERVAL
        if partial.is_complete:
            self._complete_incoming(incoming)
        elif now - incoming.progress_time >= PROGRESS_INTERVAL:
            done = partial.bytes_present
            rate = (done - incoming.progress_bytes) / (now - incoming.progress_time)
            incoming.progress_time, incoming.progress_bytes = now, done
            self._events.append(
                events.TransferProgress(self.public_key, incoming.transfer_id, False, done, incoming.offer.size, rate)
            )

    def _complete_incoming(self, incoming: _Incoming) -> None:
        offer = incoming.offer
        try:
            path = incoming.partial.finish()
        except BlobVerificationError as error:
            incoming.partial.discard()
            self._fail_incoming(incoming, str(error), CancelCode.VERIFICATION_FAILED)
            return
        except (OSError, PartialStoreError) as error:
            incoming.partial.close()
            self._fail_incoming(incoming, f"cannot finish the received file: {error}")
            return
        self._finish_incoming(incoming, completed=True)
        self._events.append(events.TransferCompleted(self.public_key, offer.transfer_id, False, offer.sha256, path))
        self._control.append((frames.encode_done, (offer.transfer_id,)))

    def _fail_outgoing(self, outgoing: _Outgoing, reason: str) -> None:
        del self._outgoing[outgoing.transfer_id]
        self._send_order.remove(outgoing.transfer_id)
        self._events.append(
            events.TransferFailed(self.public_key, outgoing.transfer_id, True, outgoing.source.sha256, reason)
        )
        self._control.append((frames.encode_cancel, (outgoing.transfer_id, True, CancelCode.CANCELLED, reason)))

    def _fail_incoming(self, incoming: _Incoming, reason: str, code: CancelCode = CancelCode.CANCELLED) -> None:
        offer = incoming.offer
        self._finish_incoming(incoming, completed=False)
        self._events.append(events.TransferFailed(self.public_key, offer.transfer_id, False, offer.sha256, reason))
        self._control.append((frames.encode_cancel, (offer.transfer_id, False, code, reason)))

    def _finish_incoming(self, incoming: _Incoming, completed: bool) -> None:
        incoming.partial = None
        del self._incoming[incoming.transfer_id]
        if self._incoming_by_sha.get(incoming.offer.sha256) == incoming.transfer_id:
            del self._incoming_by_sha[incoming.offer.sha256]
        self._finished[incoming.transfer_id] = completed
        if len(self._finished) > FINISHED_REMEMBERED:
            self._finished.popitem(last=False)

    def _on_offer(self, offer: frames.Offer, now: float) -> None:
        transfer_id = offer.transfer_id
        finished = self._finished.get(transfer_id)
        if finished is not None:
            if finished:
                self._control.append((frames.encode_done, (transfer_id,)))
            else:
                self._control.append((frames.encode_cancel, (transfer_id, False, CancelCode.CANCELLED, "cancelled")))
            return
        incoming = self._incoming.get(transfer_id)
        if incoming is not None:
            if incoming.phase is _Phase.RECEIVING:
                self._control.append((frames.encode_accept, (transfer_id, tuple(incoming.partial.have))))
            return
        if transfer_id in self._outgoing:
            return  # both sides picked the same id: vanishingly rare, and the giver will time out
        previous = self._incoming_by_sha.get(offer.sha256)
        if previous is not None:
            # The giver restarted and offers the same blob under a new id: the new offer replaces the
            # old one (its partial file stays on disk, and accepting the new offer resumes it).
            stale = self._incoming[previous]
            if stale.partial is not None:
                try:
                    stale.partial.wait_recorded()
                    stale.partial.checkpoint()
                except OSError:
                    pass  # unrecorded data is simply received again
                stale.partial.close()
            self._finish_incoming(stale, completed=False)
        incoming = _Incoming(offer, now)
        self._incoming[transfer_id] = incoming
        self._incoming_by_sha[offer.sha256] = transfer_id
        self._events.append(
            events.TransferOffered(
                self.public_key, transfer_id, offer.sha256, offer.size, offer.name, offer.kind, offer.metadata
            )
        )

    def _on_accept(self, accept: frames.Accept, now: float) -> None:
        outgoing = self._outgoing.get(accept.transfer_id)
        if outgoing is None or outgoing.phase is not _Phase.OFFERING:
            return
        size = outgoing.source.size
        have = RangeSet((start, min(end, size)) for start, end in accept.have if start < size)
        outgoing.to_send = deque([start, end] for start, end in have.gaps(0, size))
        outgoing.phase = _Phase.SENDING
        outgoing.acked_bytes = have.total()
        outgoing.progress_bytes = outgoing.acked_bytes
        outgoing.wake_at = None if outgoing.to_send else now + self._done_patience(outgoing)

    def _on_cancel(self, cancel: frames.Cancel) -> None:
        if cancel.by_giver:
            incoming = self._incoming.get(cancel.transfer_id)
            if incoming is None:
                return
            if incoming.partial is not None:
                incoming.partial.discard()
            self._finish_incoming(incoming, completed=False)
            self._events.append(
                events.TransferCancelled(
                    self.public_key, cancel.transfer_id, False, incoming.offer.sha256, cancel.reason
                )
            )
            return
        outgoing = self._outgoing.pop(cancel.transfer_id, None)
        if outgoing is None:
            return
        self._send_order.remove(cancel.transfer_id)
        sha256 = outgoing.source.sha256
        if cancel.code is CancelCode.VERIFICATION_FAILED:
            event = events.TransferFailed(self.public_key, cancel.transfer_id, True, sha256, cancel.reason)
        else:
            event = events.TransferCancelled(self.public_key, cancel.transfer_id, True, sha256, cancel.reason)
        self._events.append(event)

    def _on_done(self, done: frames.Done) -> None:
        outgoing = self._outgoing.pop(done.transfer_id, None)
        if outgoing is None:
            return
        self._send_order.remove(done.transfer_id)
        self._events.append(
            events.TransferCompleted(self.public_key, done.transfer_id, True, outgoing.source.sha256)
        )

    def _on_unknown_transfer(self, frame: frames.UnknownTransfer, now: float) -> None:
        outgoing = self._outgoing.get(frame.transfer_id)
        if outgoing is not None and outgoing.phase is _Phase.SENDING:
            self._reoffer(outgoing, now)

    def _reoffer(self, outgoing: _Outgoing, now: float) -> None:
        outgoing.phase = _Phase.OFFERING
        outgoing.to_send.clear()
        outgoing.wake_at = now + min(OFFER_PATIENCE, self._done_patience(outgoing))
        outgoing.patience_doublings += 1
        self._queue_offer(outgoing)

    def _queue_offer(self, outgoing: _Outgoing) -> None:
        source = outgoing.source
        self._control.append(
            (
                frames.encode_offer,
                (outgoing.transfer_id, source.size, source.sha256, source.name, source.kind, source.metadata),
            )
        )

    def _done_patience(self, outgoing: _Outgoing) -> float:
        base = max(MIN_DONE_PATIENCE, 3 * self.rtt.probe_timeout())
        return min(MAX_PATIENCE, base * (1 << min(outgoing.patience_doublings, 16)))

    # --- acknowledgements and loss ---------------------------------------------------------------

    def _on_ack(self, ack: frames.Ack, now: float) -> None:
        ranges = ack.ranges
        largest = ranges[0][1] - 1
        if largest >= self._next_packet_number:
            self.frames_dropped += 1  # acknowledges what was never sent
            return
        self.peer_window = ack.window
        if self._declared_lost:
            self._find_spurious_losses(ranges)
        sent = self._sent
        if not sent:
            return
        oldest = next(iter(sent))
        acked_bytes = 0
        newest_number = -1
        newest: tuple[Any, ...] | None = None
        touched: set[int] = set()
        outgoing_map = self._outgoing
        for start, end in ranges:
            if end <= oldest:
                break
            for packet_number in range(max(start, oldest), end):
                record = sent.pop(packet_number, None)
                if record is None:
                    continue
                acked_bytes += record[SIZE]
                if packet_number > newest_number:
                    newest_number, newest = packet_number, record
                if record[CONTROL] is None:
                    outgoing = outgoing_map.get(record[TRANSFER])
                    if outgoing is not None:
                        outgoing.outstanding -= 1
                        outgoing.acked_bytes += record[LENGTH]
                        touched.add(record[TRANSFER])
        if newest is None:
            return
        self.bytes_in_flight -= acked_bytes
        if largest > self._largest_acked:
            self._largest_acked = largest
        rtt_sample = None
        if newest_number == largest:
            rtt_sample = now - newest[SENT_TIME]
            self.rtt.update(rtt_sample, ack.ack_delay)
        self._pto_count = 0
        self._detect_losses(now)
        self.congestion.on_ack(now, acked_bytes, newest[SNAPSHOT], newest[SENT_TIME], rtt_sample, self.bytes_in_flight)
        for transfer_id in touched:
            self._after_ack(outgoing_map.get(transfer_id), now)

    def _find_spurious_losses(self, ranges: tuple[frames.Range, ...]) -> None:
        declared = self._declared_lost
        lowest_reported = ranges[-1][0]
        spurious_bytes = 0
        for packet_number in list(declared):
            if packet_number < lowest_reported:
                del declared[packet_number]  # the peer no longer reports that far back
            elif any(start <= packet_number < end for start, end in ranges):
                size, distance = declared.pop(packet_number)
                spurious_bytes += size
                self._packet_threshold = min(max(self._packet_threshold, distance + 1), MAX_PACKET_THRESHOLD)
                self._time_threshold = min(self._time_threshold + 1 / 8, MAX_TIME_THRESHOLD)
        if spurious_bytes:
            self.congestion.on_spurious_loss(spurious_bytes)

    def _after_ack(self, outgoing: _Outgoing | None, now: float) -> None:
        if outgoing is None:
            return
        if outgoing.phase is _Phase.SENDING and not outgoing.outstanding and not outgoing.to_send:
            outgoing.wake_at = now + self._done_patience(outgoing)
        if now - outgoing.progress_time >= PROGRESS_INTERVAL:
            done = min(outgoing.acked_bytes, outgoing.source.size)
            rate = (done - outgoing.progress_bytes) / (now - outgoing.progress_time)
            outgoing.progress_time, outgoing.progress_bytes = now, done
            self._events.append(
                events.TransferProgress(
                    self.public_key, outgoing.transfer_id, True, done, outgoing.source.size, rate
                )
            )

    def _detect_losses(self, now: float) -> None:
        loss_delay = self.rtt.loss_delay(self._time_threshold)
        threshold = self._largest_acked - self._packet_threshold
        self._loss_time = None
        lost: list[int] = []
        for packet_number, record in self._sent.items():
            if packet_number > self._largest_acked:
                break
            # Compared as sent + delay (not now - delay) so the timer set below is exactly what fires it.
            lost_at = record[SENT_TIME] + loss_delay
            if packet_number <= threshold or lost_at <= now:
                lost.append(packet_number)
            else:
                self._loss_time = lost_at
                break
        if not lost:
            return
        lost_bytes = 0
        declared = self._declared_lost
        for packet_number in lost:
            record = self._sent.pop(packet_number)
            lost_bytes += record[SIZE]
            declared[packet_number] = (record[SIZE], self._largest_acked - packet_number)
            self._resend_later(record, now)
        while len(declared) > DECLARED_LOST_REMEMBERED:
            del declared[next(iter(declared))]
        self.bytes_in_flight -= lost_bytes
        self.congestion.on_packets_lost(lost_bytes)

    def _resend_later(self, record: tuple[Any, ...], now: float) -> None:
        control = record[CONTROL]
        if control is not None:
            self._control.append(control)
            return
        outgoing = self._outgoing.get(record[TRANSFER])
        if outgoing is None:
            return
        outgoing.outstanding -= 1
        if outgoing.phase is _Phase.SENDING:
            offset = record[OFFSET]
            outgoing.to_send.appendleft([offset, offset + record[LENGTH]])
            outgoing.wake_at = None

    def _on_probe_timeout(self, now: float) -> None:
        self._pto_count += 1
        self._probes_owed = 2
        if self._pto_count == BLACK_HOLE_PROBE_TIMEOUTS:
            self._black_hole_suspected = True
        # Restart the timer even if no probe can be built (every frame in flight is obsolete).
        self._last_ack_eliciting_time = now

    # --- frames out -------------------------------------------------------------------------------

    def _check_send_due(self, now: float) -> None:
        if self._send_due is None and (self._control or self._ack_now or self._probes_owed):
            self._send_due = now

    def frames_to_send(self, now: float, max_frame_size: int) -> list[bytes]:
        self._send_due = None
        out: list[bytes] = []
        if self._write_queue:
            self._drain_writes(now)
        if self._ack_now:
            out.append(self._build_ack(now))
        control = self._control
        while control:
            encoder, arguments = control.popleft()
            if encoder is frames.encode_unknown_transfer:
                out.append(encoder(*arguments))
            else:
                out.append(self._send_numbered(now, encoder, arguments))
        if self._probes_owed:
            self._send_probes(now, max_frame_size, out)
        payload_limit = max_frame_size - frames.DATA_OVERHEAD
        if payload_limit > 0 and self._send_order:
            self._send_data(now, max_frame_size, payload_limit, out)
        return out

    def _send_data(self, now: float, max_frame_size: int, payload_limit: int, out: list[bytes]) -> None:
        congestion, pacer, order, outgoing_map = self.congestion, self.pacer, self._send_order, self._outgoing
        while True:
            if not self._window_open() or not pacer.may_send(now):
                return
            for _ in range(len(order)):
                outgoing = outgoing_map[order[0]]
                order.rotate(-1)
                if outgoing.to_send and outgoing.phase is _Phase.SENDING:
                    break
            else:
                congestion.on_app_limited(self.bytes_in_flight)
                return
            piece = outgoing.to_send[0]
            offset = piece[0]
            length = min(piece[1] - offset, payload_limit)
            if offset + length == piece[1]:
                outgoing.to_send.popleft()
            else:
                piece[0] = offset + length
            frame = self._data_frame(now, outgoing, offset, length)
            if frame is not None:
                pacer.on_sent(now, len(frame), congestion.pacing_rate)
                out.append(frame)

    def _data_frame(self, now: float, outgoing: _Outgoing, offset: int, length: int) -> bytes | None:
        """Build and record one Data frame; None if the source cannot be read (the transfer fails)."""
        try:
            payload = outgoing.source.read(offset, length)
        except (OSError, BlobSourceError) as error:
            detail = getattr(error, "strerror", None) or error
            self._fail_outgoing(outgoing, f"cannot read the blob being sent: {detail}")
            return None
        packet_number = self._next_packet_number
        self._next_packet_number = packet_number + 1
        frame = frames.encode_data_header(packet_number, outgoing.transfer_id, offset) + payload
        size = len(frame)
        snapshot = self.congestion.on_packet_sent(now, self.bytes_in_flight)
        self._sent[packet_number] = (now, size, outgoing.transfer_id, offset, length, None, snapshot)
        self.bytes_in_flight += size
        self._last_ack_eliciting_time = now
        outgoing.outstanding += 1
        self.data_bytes_sent += length
        return frame

    def _send_numbered(self, now: float, encoder: Callable[..., bytes], arguments: tuple[Any, ...]) -> bytes:
        packet_number = self._next_packet_number
        self._next_packet_number = packet_number + 1
        frame = encoder(packet_number, *arguments)
        snapshot = self.congestion.on_packet_sent(now, self.bytes_in_flight)
        self._sent[packet_number] = (now, len(frame), None, -1, 0, (encoder, arguments), snapshot)
        self.bytes_in_flight += len(frame)
        self._last_ack_eliciting_time = now
        return frame

    def _send_probes(self, now: float, max_frame_size: int, out: list[bytes]) -> None:
        """RFC 9002 6.2.4: on PTO send up to two ack-eliciting probes, here copies of the oldest frames."""
        probed: set[tuple[Any, int]] = set()
        chosen = []
        for record in self._sent.values():
            if len(chosen) == self._probes_owed:
                break
            content = (record[TRANSFER] if record[CONTROL] is None else record[CONTROL], record[OFFSET])
            if content not in probed:  # an earlier probe of the same bytes is still in flight
                probed.add(content)
                chosen.append(record)
        for record in chosen:
            control = record[CONTROL]
            if control is not None:
                out.append(self._send_numbered(now, *control))
                continue
            outgoing = self._outgoing.get(record[TRANSFER])
            if outgoing is None or outgoing.phase is not _Phase.SENDING:
                continue
            length = min(record[LENGTH], max_frame_size - frames.DATA_OVERHEAD)
            frame = self._data_frame(now, outgoing, record[OFFSET], length)
            if frame is not None:
                out.append(frame)
        self._probes_owed = 0

    def _build_ack(self, now: float) -> bytes:
        self._ack_now = False
        self._ack_deadline = None
        self._unacked_count = 0
        window = max(self.receive_buffer - self._queued_bytes, 0)
        self._advertised_window = window
        return frames.encode_ack(
            now - self._largest_received_time, window, self._received.newest_first(ACK_RANGES_REPORTED)
        )

    def _drain_writes(self, now: float, force: bool = False) -> None:
        queue = self._write_queue
        while queue:
            incoming, offset, payload = queue[0]
            if incoming.phase is _Phase.RECEIVING and not force and not incoming.partial.ready(now):
                self._write_retry_at = now + WRITE_RETRY_INTERVAL
                return
            queue.popleft()
            self._queued_bytes -= len(payload)
            if incoming.phase is _Phase.RECEIVING and incoming.partial is not None:
                self._store(incoming, offset, payload, now)
        self._write_retry_at = None
        # The giver stopped at our last advertised window: reopen it without waiting for more data.
        if self._advertised_window < self.receive_buffer // 4 and self._received_count:
            self._ack_now = True

    # --- timers -----------------------------------------------------------------------------------

    def _probe_timeout_at(self) -> float | None:
        if not self.bytes_in_flight:
            return None
        interval = min(self.rtt.probe_timeout(self._pto_count), MAX_PROBE_INTERVAL)
        return self._last_ack_eliciting_time + interval

    def get_timer(self) -> float | None:
        candidates = [self._send_due, self._ack_deadline, self._write_retry_at, self._checkpoint_at]
        candidates.append(self._loss_time if self._loss_time is not None else self._probe_timeout_at())
        for outgoing in self._outgoing.values():
            candidates.append(outgoing.wake_at)
            if outgoing.to_send and outgoing.phase is _Phase.SENDING and self._window_open():
                candidates.append(self.pacer.next_send_time)
        return min((time for time in candidates if time is not None), default=None)

    def _window_open(self) -> bool:
        in_flight = self.bytes_in_flight
        return in_flight < self.congestion.cwnd and (not in_flight or in_flight < self.peer_window)

    def handle_timer(self, now: float) -> None:
        if self._ack_deadline is not None and now >= self._ack_deadline:
            self._ack_now = True
            self._ack_deadline = None
        if self._loss_time is not None:
            if now >= self._loss_time:
                self._detect_losses(now)
        else:
            deadline = self._probe_timeout_at()
            if deadline is not None and now >= deadline:
                self._on_probe_timeout(now)
        if self._write_retry_at is not None and now >= self._write_retry_at:
            self._drain_writes(now)
        if self._checkpoint_at is not None and now >= self._checkpoint_at:
            self._checkpoint_at = None
            for incoming in list(self._incoming.values()):
                if incoming.partial is not None:
                    try:
                        incoming.partial.checkpoint()
                    except OSError as error:
                        incoming.partial.close()
                        self._fail_incoming(incoming, f"cannot record the received data: {error.strerror}")
                        continue
                    if incoming.partial.unrecorded_bytes:  # the previous checkpoint was still running
                        self._checkpoint_at = now + CHECKPOINT_INTERVAL
        for outgoing in list(self._outgoing.values()):
            if outgoing.wake_at is not None and now >= outgoing.wake_at:
                self._reoffer(outgoing, now)
        self._check_send_due(now)
