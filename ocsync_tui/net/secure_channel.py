"""The per-device secure channel core: WireGuard's handshake, sessions and timers, without sockets.

One `SecureChannel` per device serves every peer over one UDP socket, aioquic-style: feed it datagrams
(`receive_datagram(data, address, now)`) and timer expiries (`handle_timer(now)` at `get_timer()`),
give it commands (`add_peer`, `connect`, `send`, `start_introduction`, ...), and collect what it wants
sent (`datagrams_to_send(now)`) and what happened (`next_event()`, events from `events.py`).

Bulk data goes through two fast paths the driver calls per datagram: `seal(public_key, payload, now)`
encrypts one payload in the current session and returns `(datagram, address)` at once, and
`open_transport(data, address, now)` authenticates and decrypts one transport packet, returning
`(public_key, payload)`. Both return None when there is nothing to do (no session yet, a replay, a
forgery, a keepalive); neither allocates more than the datagram itself. A transport datagram is
`TRANSPORT_OVERHEAD` bytes larger than its payload.

Peers are named by their 32-byte Ed25519 identity keys. What the channel guarantees:
- Sessions are named by receiver indices, not addresses: an authenticated packet from a new address
  moves the peer there (PeerEndpointChanged).
- Nothing is answered to a sender that does not know our key (mac1), nor to a replayed initiation
  (timestamps must grow), nor, under load, to an initiation whose source address is unproven (mac2,
  cookie reply first, no Diffie-Hellman before). No reply is larger than what prompted it.
- Keys are renewed after REKEY_AFTER_TIME or REKEY_AFTER_MESSAGES by the side that made them, and
  refused after REJECT_AFTER_TIME / REJECT_AFTER_MESSAGES; the previous keys keep decrypting packets
  still in flight. A handshake is retried every REKEY_TIMEOUT (+ jitter) and abandoned after
  REKEY_ATTEMPT_TIME (SessionLost, queued payloads dropped).
- WireGuard's data timers: data sent and nothing heard for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT starts a
  new handshake (the peer restarted and lost the session); data received and nothing sent for
  KEEPALIVE_TIMEOUT sends an empty keepalive. Liveness verdicts are the keepalive core's, not ours.
- An initiation from a device not added is dropped and reported (UnknownDeviceAttempt), rate-limited.
- Introductions (first contact by address, Noise_XX) are answered only from addresses allowed with
  `allow_introduction_from`; they reveal the two keys (IntroductionCompleted) and nothing else.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from typing import Any

import nacl.signing
from cryptography.exceptions import InvalidTag

from ocsync_tui.errors import OcsyncError
from ocsync_tui.net import codec
from ocsync_tui.net.codec import (
    MAX_DATAGRAM_SIZE,
    TRANSPORT,
    TRANSPORT_HEADER,
    TRANSPORT_HEADER_SIZE,
    TRANSPORT_OVERHEAD,
    VERSION,
    CodecError,
    CookieReply,
    Initiation,
    Response,
)
from ocsync_tui.net.cookie import CookieChecker, HandshakeLoad, MacSigner, SourceRateLimiter
from ocsync_tui.net.events import (
    PayloadReceived,
    PeerEndpointChanged,
    SessionEstablished,
    SessionLost,
)
from ocsync_tui.net.handshake import IKInitiator, IKResponder, StaticKeyPair
from ocsync_tui.net.introduction import Introductions
from ocsync_tui.net.noise import (
    KEY_SIZE,
    TIMESTAMP_SIZE,
    CryptoFailure,
    COUNTER_NONCE,
    dh,
    static_private_key,
    static_public_key,
    tai64n,
)
from ocsync_tui.net.session import Keypair, SessionLimits
from ocsync_tui.net.unknown_devices import UnknownDevices

__all__ = ["TRANSPORT_OVERHEAD", "MAX_TRANSPORT_PAYLOAD", "SecureChannel", "PeerKeyError", "UnknownPeerError"]

MAX_TRANSPORT_PAYLOAD = codec.MAX_TRANSPORT_PAYLOAD
# WireGuard refuses initiations from one peer closer together than 1/50 s (a flood of valid ones).
MIN_INITIATION_INTERVAL = 1 / 50
# Successive initiations must carry growing timestamps; this beats the timestamp's 2**-24 s rounding.
_TIMESTAMP_STEP = 0.02
_INDEX_SPACE = 2**32

Address = Any
_nonce = COUNTER_NONCE.pack
_pack_header = TRANSPORT_HEADER.pack
_unpack_header = TRANSPORT_HEADER.unpack_from


class PeerKeyError(OcsyncError):
    """A peer's public key cannot be used (not an Ed25519 key, or a weak one)."""


class UnknownPeerError(OcsyncError):
    """A command named a peer that was never added (or was removed)."""


class _Peer:
    __slots__ = (
        "public_key", "static_public", "static_static", "endpoint", "signer", "current", "previous", "next",
        "handshake", "handshake_index", "attempts_began", "retransmit_at", "greatest_timestamp",
        "last_initiation_received", "queue", "established", "awaiting_reply_since", "keepalive_due",
    )

    def __init__(self, public_key: bytes, static_public: bytes, static_static: bytes, endpoint: Address) -> None:
        self.public_key = public_key
        self.static_public = static_public
        self.static_static = static_static
        self.endpoint = endpoint
        self.signer = MacSigner(static_public)
        self.current: Keypair | None = None
        self.previous: Keypair | None = None
        self.next: Keypair | None = None
        self.handshake: IKInitiator | None = None
        self.handshake_index = 0
        self.attempts_began = 0.0
        self.retransmit_at: float | None = None
        self.greatest_timestamp = b""
        self.last_initiation_received = float("-inf")
        self.queue: deque[bytes] = deque()
        self.established = False
        # WireGuard's two data timers: data sent and nothing heard for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT
        # means the peer lost our session (it restarted): handshake anew. Data received and nothing
        # sent for KEEPALIVE_TIMEOUT: send a keepalive, so the other side's first timer stays quiet.
        self.awaiting_reply_since: float | None = None
        self.keepalive_due: float | None = None

    def keypairs(self) -> list[Keypair]:
        return [keypair for keypair in (self.current, self.previous, self.next) if keypair is not None]


class SecureChannel:
    def __init__(
        self,
        signing_key: nacl.signing.SigningKey,
        *,
        limits: SessionLimits | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
        wall_clock_offset: float = 0.0,
        cookie_threshold: int = 64,
        unknown_devices: UnknownDevices | None = None,
        max_queued_payloads: int = 1024,
    ) -> None:
        """`wall_clock_offset` turns the `now` the driver passes into Unix time (for the handshake's
        timestamps); `random_bytes` is os.urandom except in tests; `cookie_threshold` is how many
        handshake messages per second the device takes before it demands proof of address."""
        self.public_key = bytes(signing_key.verify_key)
        self.limits = limits or SessionLimits()
        self._random_bytes = random_bytes
        self._wall_clock_offset = wall_clock_offset
        seed_and_public = bytes(signing_key) + self.public_key
        self._static = StaticKeyPair.from_private(static_private_key(seed_and_public))
        self._cookies = CookieChecker(self._static.public, random_bytes)
        self._load = HandshakeLoad(cookie_threshold)
        self._rate_limiter = SourceRateLimiter()
        self.unknown_devices = unknown_devices if unknown_devices is not None else UnknownDevices()
        self._max_queued = max_queued_payloads
        self._peers: dict[bytes, _Peer] = {}
        self._peers_by_static: dict[bytes, _Peer] = {}
        self._keypairs: dict[int, tuple[_Peer, Keypair]] = {}
        self._handshakes: dict[int, _Peer] = {}
        self._outbox: list[tuple[bytes, Address]] = []
        self._events: deque[Any] = deque()
        self._last_timestamp_time = float("-inf")
        self._introductions = Introductions(
            self._static, self.public_key, random_bytes, self.limits, self._allocate_index, self._outbox,
            self._events,
        )

    # --- commands -------------------------------------------------------------------------------

    def add_peer(self, public_key: bytes, endpoint: Address | None = None) -> None:
        """Know (or re-address) a peer; its handshakes are answered and it can be sent to."""
        peer = self._peers.get(public_key)
        if peer is not None:
            if endpoint is not None:
                peer.endpoint = endpoint
            return
        try:
            static_public = static_public_key(public_key)
            static_static = dh(self._static.private, static_public)
        except CryptoFailure:
            raise PeerKeyError(f"{public_key.hex()} is not a usable device key") from None
        if static_public == self._static.public:
            raise PeerKeyError("a device cannot add itself as a peer")
        peer = _Peer(public_key, static_public, static_static, endpoint)
        self._peers[public_key] = peer
        self._peers_by_static[static_public] = peer
        self.unknown_devices.forget(public_key)

    def set_endpoint(self, public_key: bytes, endpoint: Address) -> None:
        self._peer(public_key).endpoint = endpoint

    def remove_peer(self, public_key: bytes) -> None:
        peer = self._peers.pop(public_key, None)
        if peer is None:
            return
        del self._peers_by_static[peer.static_public]
        self._clear_handshake(peer)
        for keypair in peer.keypairs():
            self._release_index(keypair.local_index)
        peer.current = peer.previous = peer.next = None
        peer.queue.clear()

    def peers(self) -> list[bytes]:
        return list(self._peers)

    def endpoint_of(self, public_key: bytes) -> Address | None:
        return self._peer(public_key).endpoint

    def has_session(self, public_key: bytes, now: float) -> bool:
        peer = self._peers.get(public_key)
        return bool(peer and peer.current and peer.current.usable_for_sending(now, self.limits))

    def connect(self, public_key: bytes, now: float) -> None:
        """Start a handshake unless a usable session exists or one is under way."""
        peer = self._peer(public_key)
        if not self.has_session(public_key, now) and peer.handshake is None:
            self._begin_handshake(peer, now)

    def send(self, public_key: bytes, payload: bytes, now: float) -> None:
        """Encrypt and queue `payload` for sending, after a handshake if there is no session yet.

        Payloads waiting for a handshake are kept up to `max_queued_payloads` (the oldest go first)."""
        if len(payload) > MAX_TRANSPORT_PAYLOAD:
            raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_TRANSPORT_PAYLOAD}")
        sealed = self.seal(public_key, payload, now)
        if sealed is not None:
            self._outbox.append(sealed)
            return
        peer = self._peer(public_key)
        if len(peer.queue) >= self._max_queued:
            peer.queue.popleft()
        peer.queue.append(payload)

    def allow_introduction_from(self, address: Address) -> None:
        self._introductions.allow(address)

    def forbid_introduction_from(self, address: Address) -> None:
        self._introductions.forbid(address)

    def start_introduction(self, address: Address, now: float) -> None:
        """First contact with a device known only by address: learn its key (IntroductionCompleted)."""
        self._introductions.start(address, now)

    # --- fast paths -----------------------------------------------------------------------------

    def seal(self, public_key: bytes, payload: bytes, now: float) -> tuple[bytes, Address] | None:
        """Encrypt `payload` for the peer now, or return None (and start a handshake) if there is no
        usable session or no known address. An empty payload is a keepalive."""
        peer = self._peers.get(public_key)
        if peer is None:
            raise UnknownPeerError(f"no peer {public_key.hex()}")
        keypair = peer.current
        limits = self.limits
        if keypair is None or peer.endpoint is None or not keypair.usable_for_sending(now, limits):
            if peer.handshake is None:
                self._begin_handshake(peer, now)
            return None
        counter = keypair.send_counter
        keypair.send_counter = counter + 1
        peer.keepalive_due = None
        if payload and peer.awaiting_reply_since is None:
            peer.awaiting_reply_since = now
        datagram = _pack_header(TRANSPORT, VERSION, 0, keypair.remote_index, counter) + keypair.sender.encrypt(
            _nonce(counter), payload, None
        )
        if (
            keypair.is_initiator
            and peer.handshake is None
            and (counter + 1 >= limits.rekey_after_messages or now - keypair.created >= limits.rekey_after_time)
        ):
            self._begin_handshake(peer, now)
        return datagram, peer.endpoint

    def open_transport(self, data: bytes, address: Address, now: float) -> tuple[bytes, bytes] | None:
        """Authenticate and decrypt one transport packet: (peer public key, payload), or None if it
        is to be dropped or carries nothing (a keepalive)."""
        if not TRANSPORT_OVERHEAD <= len(data) <= MAX_DATAGRAM_SIZE:
            return None
        kind, version, reserved, receiver, counter = _unpack_header(data)
        if kind != TRANSPORT or version != VERSION or reserved:
            return None
        entry = self._keypairs.get(receiver)
        if entry is None:
            return None
        peer, keypair = entry
        if now - keypair.created >= self.limits.reject_after_time:
            return None
        try:
            payload = keypair.receiver.decrypt(_nonce(counter), memoryview(data)[TRANSPORT_HEADER_SIZE:], None)
        except InvalidTag:
            return None
        if not keypair.replay.accept(counter):
            return None
        peer.awaiting_reply_since = None
        if payload and peer.keepalive_due is None:
            peer.keepalive_due = now + self.limits.keepalive_timeout
        if keypair is not peer.current:
            if keypair is peer.next:
                self._confirm_next(peer, now)
        if address != peer.endpoint:
            self._move_endpoint(peer, address)
        limits = self.limits
        if (
            keypair.is_initiator
            and peer.handshake is None
            and now - keypair.created
            >= limits.reject_after_time - limits.keepalive_timeout - limits.rekey_timeout
            and keypair is peer.current
        ):
            self._begin_handshake(peer, now)
        if not payload:
            return None
        return peer.public_key, payload

    # --- the sans-I/O interface -----------------------------------------------------------------

    def receive_datagram(self, data: bytes, address: Address, now: float) -> None:
        if data[:1] == b"\x04":
            opened = self.open_transport(data, address, now)
            if opened is not None:
                self._events.append(PayloadReceived(opened[0], opened[1], address))
            return
        try:
            packet = codec.decode(data)
        except CodecError:
            return
        match packet:
            case Initiation():
                self._receive_initiation(packet, data, address, now)
            case Response():
                self._receive_response(packet, data, address, now)
            case CookieReply():
                self._receive_cookie_reply(packet, now)
            case _:
                self._introductions.receive(packet, address, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        datagrams = self._outbox[:]
        self._outbox.clear()
        return datagrams

    def next_event(self) -> Any:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        deadlines = [deadline for peer in self._peers.values() if (deadline := self._peer_deadline(peer)) is not None]
        introduction = self._introductions.get_timer()
        if introduction is not None:
            deadlines.append(introduction)
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> None:
        limits = self.limits
        for peer in list(self._peers.values()):
            if peer.retransmit_at is not None and now >= peer.retransmit_at:
                if now - peer.attempts_began >= limits.rekey_attempt_time:
                    self._give_up_handshake(peer, now)
                else:
                    self._send_initiation(peer, now)
            for keypair in peer.keypairs():
                if now - keypair.created >= limits.reject_after_time:
                    self._expire(peer, keypair)
            if peer.keepalive_due is not None and now >= peer.keepalive_due:
                peer.keepalive_due = None
                sealed = self.seal(peer.public_key, b"", now)
                if sealed is not None:
                    self._outbox.append(sealed)
            if (
                peer.awaiting_reply_since is not None
                and now >= peer.awaiting_reply_since + limits.keepalive_timeout + limits.rekey_timeout
            ):
                peer.awaiting_reply_since = None
                if peer.handshake is None:
                    self._begin_handshake(peer, now)
        self._introductions.handle_timer(now)

    # --- handshake ------------------------------------------------------------------------------

    def _begin_handshake(self, peer: _Peer, now: float) -> None:
        if peer.endpoint is None:
            return
        peer.attempts_began = now
        self._send_initiation(peer, now)

    def _send_initiation(self, peer: _Peer, now: float) -> None:
        self._clear_handshake(peer)
        if peer.endpoint is None:
            return
        initiator = IKInitiator(self._static, peer.static_public, self._random_bytes(KEY_SIZE))
        stamp_time = max(now + self._wall_clock_offset, self._last_timestamp_time + _TIMESTAMP_STEP)
        self._last_timestamp_time = stamp_time
        body = initiator.write_initiation(tai64n(stamp_time) + self.public_key, peer.static_static)
        index = self._allocate_index()
        self._handshakes[index] = peer
        peer.handshake, peer.handshake_index = initiator, index
        message = codec.encode(Initiation(index, body[:32], body[32:80], body[80:]))
        self._outbox.append((peer.signer.sign(message, now), peer.endpoint))
        jitter = int.from_bytes(self._random_bytes(2), "big") / 65536 * self.limits.rekey_timeout_jitter
        peer.retransmit_at = now + self.limits.rekey_timeout + jitter

    def _clear_handshake(self, peer: _Peer) -> None:
        if peer.handshake is not None:
            self._handshakes.pop(peer.handshake_index, None)
        peer.handshake, peer.handshake_index, peer.retransmit_at = None, 0, None

    def _give_up_handshake(self, peer: _Peer, now: float) -> None:
        self._clear_handshake(peer)
        dropped = len(peer.queue)
        peer.queue.clear()
        if peer.current is not None and peer.current.usable_for_sending(now, self.limits):
            return  # a failed rekey; the session still works and the next send tries again
        peer.established = False
        self._events.append(
            SessionLost(
                peer.public_key,
                f"no handshake answer within {self.limits.rekey_attempt_time:g} s"
                + (f"; {dropped} queued payloads dropped" if dropped else ""),
            )
        )

    def _refused_under_load(self, data: bytes, sender: int, address: Address, now: float) -> bool:
        """mac1 is valid here. Under load, answer an unproven address with a cookie reply instead, and
        process no more from one host than the rate limiter allows."""
        if not self._load.record(now):
            return False
        if not self._cookies.mac2_valid(data, address, now):
            self._outbox.append((codec.encode(self._cookies.cookie_reply(data, sender, address, now)), address))
            return True
        return not self._rate_limiter.allow(address, now)

    def _receive_initiation(self, packet: Initiation, data: bytes, address: Address, now: float) -> None:
        if not self._cookies.mac1_valid(data) or self._refused_under_load(data, packet.sender, address, now):
            return
        responder = IKResponder(self._static)

        def precomputed(initiator_public: bytes) -> bytes | None:
            known = self._peers_by_static.get(initiator_public)
            return known.static_static if known is not None else None

        try:
            payload = responder.read_initiation(packet.body, precomputed)
        except CryptoFailure:
            return
        timestamp, identity = payload[:TIMESTAMP_SIZE], payload[TIMESTAMP_SIZE:]
        try:
            if static_public_key(identity) != responder.initiator_public:
                return
        except CryptoFailure:
            return
        peer = self._peers_by_static.get(responder.initiator_public)
        if peer is None:
            attempt = self.unknown_devices.record(identity, address, now)
            if attempt is not None:
                self._events.append(attempt)
            return
        if timestamp <= peer.greatest_timestamp or now - peer.last_initiation_received < MIN_INITIATION_INTERVAL:
            return
        peer.greatest_timestamp = timestamp
        peer.last_initiation_received = now
        try:
            body, keys = responder.write_response(b"", self._random_bytes(KEY_SIZE))
        except CryptoFailure:
            return
        index = self._allocate_index()
        keypair = Keypair(
            keys.sending, keys.receiving, local_index=index, remote_index=packet.sender, created=now,
            is_initiator=False, limits=self.limits,
        )
        if peer.next is not None:
            self._release_index(peer.next.local_index)
        peer.next = keypair
        self._keypairs[index] = (peer, keypair)
        self._move_endpoint(peer, address)
        message = codec.encode(Response(index, packet.sender, body[:32], body[32:]))
        self._outbox.append((peer.signer.sign(message, now), address))

    def _receive_response(self, packet: Response, data: bytes, address: Address, now: float) -> None:
        if not self._cookies.mac1_valid(data) or self._refused_under_load(data, packet.sender, address, now):
            return
        peer = self._handshakes.get(packet.receiver)
        if peer is None or peer.handshake is None:
            return
        try:
            payload, keys = peer.handshake.read_response(packet.body)
        except CryptoFailure:
            return
        if payload:
            return
        self._handshakes.pop(packet.receiver)
        peer.handshake, peer.handshake_index, peer.retransmit_at = None, 0, None
        keypair = Keypair(
            keys.sending, keys.receiving, local_index=packet.receiver, remote_index=packet.sender, created=now,
            is_initiator=True, limits=self.limits,
        )
        self._keypairs[packet.receiver] = (peer, keypair)
        if peer.next is not None:
            # Keys the peer offered as responder were never confirmed; ours supersede them, but they
            # stay decryptable as "previous" in case the peer already sends with them.
            self._install(peer, keypair, previous=peer.next)
            peer.next = None
        else:
            self._install(peer, keypair, previous=peer.current)
        self._move_endpoint(peer, address)
        self._session_ready(peer, now, confirm_with_keepalive=True)

    def _receive_cookie_reply(self, packet: CookieReply, now: float) -> None:
        peer = self._handshakes.get(packet.receiver)
        if peer is None:
            entry = self._keypairs.get(packet.receiver)
            peer = entry[0] if entry is not None else None
        if peer is not None:
            peer.signer.accept_cookie_reply(packet, now)

    # --- keypairs -------------------------------------------------------------------------------

    def _install(self, peer: _Peer, keypair: Keypair, previous: Keypair | None) -> None:
        for old in (peer.previous, peer.current):
            if old is not None and old is not previous:
                self._release_index(old.local_index)
        peer.previous = previous
        peer.current = keypair

    def _confirm_next(self, peer: _Peer, now: float) -> None:
        keypair = peer.next
        assert keypair is not None
        keypair.confirmed = True
        peer.next = None
        self._install(peer, keypair, previous=peer.current)
        self._session_ready(peer, now, confirm_with_keepalive=False)

    def _session_ready(self, peer: _Peer, now: float, *, confirm_with_keepalive: bool) -> None:
        if not peer.established:
            peer.established = True
            self._events.append(SessionEstablished(peer.public_key, peer.endpoint))
        sent_any = False
        while peer.queue:
            sealed = self.seal(peer.public_key, peer.queue[0], now)
            if sealed is None:
                break
            peer.queue.popleft()
            self._outbox.append(sealed)
            sent_any = True
        if confirm_with_keepalive and not sent_any:
            # The responder may not send with the new keys until it sees them used.
            sealed = self.seal(peer.public_key, b"", now)
            if sealed is not None:
                self._outbox.append(sealed)

    def _expire(self, peer: _Peer, keypair: Keypair) -> None:
        self._release_index(keypair.local_index)
        if keypair is peer.current:
            peer.current = None
            if peer.established:
                peer.established = False
                # With a renewal under way, its outcome is the news: SessionEstablished or SessionLost.
                if peer.handshake is None:
                    self._events.append(SessionLost(peer.public_key, "session expired without being renewed"))
        elif keypair is peer.previous:
            peer.previous = None
        elif keypair is peer.next:
            peer.next = None

    def _peer_deadline(self, peer: _Peer) -> float | None:
        limits = self.limits
        deadlines = [keypair.created + limits.reject_after_time for keypair in peer.keypairs()]
        if peer.retransmit_at is not None:
            deadlines.append(peer.retransmit_at)
        if peer.keepalive_due is not None:
            deadlines.append(peer.keepalive_due)
        if peer.awaiting_reply_since is not None:
            deadlines.append(peer.awaiting_reply_since + limits.keepalive_timeout + limits.rekey_timeout)
        return min(deadlines, default=None)

    # --- helpers --------------------------------------------------------------------------------

    def _move_endpoint(self, peer: _Peer, address: Address) -> None:
        if address != peer.endpoint:
            peer.endpoint = address
            self._events.append(PeerEndpointChanged(peer.public_key, address))

    def _allocate_index(self) -> int:
        while True:
            index = int.from_bytes(self._random_bytes(4), "little")
            if index not in self._keypairs and index not in self._handshakes and not self._introductions.owns(index):
                return index

    def _release_index(self, index: int) -> None:
        self._keypairs.pop(index, None)

    def _peer(self, public_key: bytes) -> _Peer:
        peer = self._peers.get(public_key)
        if peer is None:
            raise UnknownPeerError(f"no peer {public_key.hex()}")
        return peer
