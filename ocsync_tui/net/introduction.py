"""First contact with a device known only by its address: Noise_XX, answered only from allowed addresses.

    -> e                    payload: 100 zero bytes (padding: the hello is as large as the reply)
    <- e, ee, s, es         payload: the responder's Ed25519 identity key
    -> s, se                payload: the initiator's Ed25519 identity key

Each side proves it holds the X25519 key its Ed25519 identity converts to, so both learn each
other's device key (IntroductionCompleted). Nothing else is exchanged: the handshake's keys are
discarded, no transport session exists, no folder data can flow. The engine keeps the key pending until
the user confirms the other device's ID, then adds it as a peer and the ordinary IK handshake runs.

The responder answers hellos only from addresses listed with `allow`, resends its reply until the
finish arrives, and the initiator answers a repeated reply with its cached finish; a hello without an
answer is resent every REKEY_TIMEOUT until REKEY_ATTEMPT_TIME (IntroductionFailed).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ocsync_tui.net import codec
from ocsync_tui.net.codec import INTRO_PADDING_SIZE, IntroFinish, IntroHello, IntroReply
from ocsync_tui.net.events import IntroductionCompleted, IntroductionFailed
from ocsync_tui.net.handshake import StaticKeyPair
from ocsync_tui.net.noise import KEY_SIZE, TAG_SIZE, CryptoFailure, SymmetricState, dh, static_public_key
from ocsync_tui.net.session import SessionLimits

CONSTRUCTION = b"Noise_XX_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER = b"ocsync v1 noise XX introduction"
_ENCRYPTED_KEY_SIZE = KEY_SIZE + TAG_SIZE
# The responder resends its reply this many times at most while waiting for the finish.
REPLY_RESENDS = 3

Address = Any


class XXInitiator:
    def __init__(self, static: StaticKeyPair, ephemeral_private: bytes, *, prologue: bytes = IDENTIFIER) -> None:
        self._static = static
        self._ephemeral = StaticKeyPair.from_private(ephemeral_private)
        self._state = SymmetricState(CONSTRUCTION)
        self._state.mix_hash(prologue)
        self._responder_ephemeral = b""
        self.responder_public = b""

    def write_hello(self, payload: bytes) -> bytes:
        self._state.mix_hash(self._ephemeral.public)
        return self._ephemeral.public + self._state.encrypt_and_hash(payload)

    def read_reply(self, body: bytes) -> bytes:
        """Return the reply's payload (`responder_public` is then set) or raise CryptoFailure."""
        state = self._state.copy()
        responder_ephemeral = body[:KEY_SIZE]
        state.mix_hash(responder_ephemeral)
        state.mix_key(dh(self._ephemeral.private, responder_ephemeral))
        responder_public = state.decrypt_and_hash(body[KEY_SIZE : KEY_SIZE + _ENCRYPTED_KEY_SIZE])
        state.mix_key(dh(self._ephemeral.private, responder_public))
        payload = state.decrypt_and_hash(body[KEY_SIZE + _ENCRYPTED_KEY_SIZE :])
        self._state = state
        self._responder_ephemeral = responder_ephemeral
        self.responder_public = responder_public
        return payload

    def write_finish(self, payload: bytes) -> bytes:
        state = self._state
        encrypted_static = state.encrypt_and_hash(self._static.public)
        state.mix_key(dh(self._static.private, self._responder_ephemeral))
        return encrypted_static + state.encrypt_and_hash(payload)


class XXResponder:
    def __init__(self, static: StaticKeyPair, *, prologue: bytes = IDENTIFIER) -> None:
        self._static = static
        self._state = SymmetricState(CONSTRUCTION)
        self._state.mix_hash(prologue)
        self.initiator_public = b""

    def read_hello(self, body: bytes) -> bytes:
        self._initiator_ephemeral = body[:KEY_SIZE]
        self._state.mix_hash(self._initiator_ephemeral)
        return self._state.decrypt_and_hash(body[KEY_SIZE:])

    def write_reply(self, payload: bytes, ephemeral_private: bytes) -> bytes:
        state = self._state
        self._ephemeral = StaticKeyPair.from_private(ephemeral_private)
        state.mix_hash(self._ephemeral.public)
        state.mix_key(dh(self._ephemeral.private, self._initiator_ephemeral))
        encrypted_static = state.encrypt_and_hash(self._static.public)
        state.mix_key(dh(self._static.private, self._initiator_ephemeral))
        return self._ephemeral.public + encrypted_static + state.encrypt_and_hash(payload)

    def read_finish(self, body: bytes) -> bytes:
        state = self._state.copy()
        initiator_public = state.decrypt_and_hash(body[:_ENCRYPTED_KEY_SIZE])
        state.mix_key(dh(self._ephemeral.private, initiator_public))
        payload = state.decrypt_and_hash(body[_ENCRYPTED_KEY_SIZE:])
        self._state = state
        self.initiator_public = initiator_public
        return payload


def _proven_identity(claimed_identity: bytes, proven_static: bytes) -> bool:
    try:
        return static_public_key(claimed_identity) == proven_static
    except CryptoFailure:
        return False


@dataclass
class _Outgoing:
    """An introduction this device asked for."""

    address: Address
    index: int
    handshake: XXInitiator
    began: float
    retransmit_at: float | None
    reply: bytes = b""
    finish: bytes = b""


@dataclass
class _Incoming:
    """A hello this device answered, waiting for its finish."""

    address: Address
    index: int
    handshake: XXResponder
    hello: bytes
    reply: bytes
    retransmit_at: float
    resends_left: int


class Introductions:
    """The introduction part of a SecureChannel; it shares the channel's outbox, events and indices."""

    def __init__(
        self,
        static: StaticKeyPair,
        identity: bytes,
        random_bytes: Callable[[int], bytes],
        limits: SessionLimits,
        allocate_index: Callable[[], int],
        outbox: list[tuple[bytes, Address]],
        events: deque[Any],
    ) -> None:
        self._static = static
        self._identity = identity
        self._random_bytes = random_bytes
        self._limits = limits
        self._allocate_index = allocate_index
        self._outbox = outbox
        self._events = events
        self._allowed: set[Address] = set()
        self._outgoing: dict[int, _Outgoing] = {}
        self._incoming: dict[int, _Incoming] = {}

    def owns(self, index: int) -> bool:
        return index in self._outgoing or index in self._incoming

    def allow(self, address: Address) -> None:
        self._allowed.add(address)

    def forbid(self, address: Address) -> None:
        self._allowed.discard(address)
        self._forget_incoming_from(address)

    def _forget_incoming_from(self, address: Address) -> None:
        for index in [i for i, incoming in self._incoming.items() if incoming.address == address]:
            del self._incoming[index]

    def start(self, address: Address, now: float) -> None:
        for index in [i for i, outgoing in self._outgoing.items() if outgoing.address == address]:
            del self._outgoing[index]
        self._send_hello(address, now, began=now)

    def _send_hello(self, address: Address, now: float, began: float) -> None:
        handshake = XXInitiator(self._static, self._random_bytes(KEY_SIZE))
        body = handshake.write_hello(bytes(INTRO_PADDING_SIZE))
        index = self._allocate_index()
        self._outgoing[index] = _Outgoing(address, index, handshake, began, now + self._retry_delay())
        self._outbox.append((codec.encode(IntroHello(index, body[:KEY_SIZE], body[KEY_SIZE:])), address))

    def _retry_delay(self) -> float:
        jitter = int.from_bytes(self._random_bytes(2), "big") / 65536 * self._limits.rekey_timeout_jitter
        return self._limits.rekey_timeout + jitter

    def receive(self, packet: Any, address: Address, now: float) -> None:
        match packet:
            case IntroHello():
                self._receive_hello(packet, address, now)
            case IntroReply():
                self._receive_reply(packet, address, now)
            case IntroFinish():
                self._receive_finish(packet, address)

    def _receive_hello(self, packet: IntroHello, address: Address, now: float) -> None:
        if address not in self._allowed:
            return
        hello = packet.ephemeral + packet.padding
        for incoming in self._incoming.values():
            if incoming.address == address and incoming.hello == hello:
                self._outbox.append((incoming.reply, address))
                return
        # A new hello from the address supersedes the half-done introduction with it.
        self._forget_incoming_from(address)
        handshake = XXResponder(self._static)
        try:
            handshake.read_hello(hello)
            body = handshake.write_reply(self._identity, self._random_bytes(KEY_SIZE))
        except CryptoFailure:
            return
        index = self._allocate_index()
        reply = codec.encode(
            IntroReply(
                index, packet.sender, body[:KEY_SIZE], body[KEY_SIZE : KEY_SIZE + _ENCRYPTED_KEY_SIZE],
                body[KEY_SIZE + _ENCRYPTED_KEY_SIZE :],
            )
        )
        self._incoming[index] = _Incoming(
            address, index, handshake, hello, reply, now + self._retry_delay(), REPLY_RESENDS
        )
        self._outbox.append((reply, address))

    def _receive_reply(self, packet: IntroReply, address: Address, now: float) -> None:
        outgoing = self._outgoing.get(packet.receiver)
        if outgoing is None or outgoing.address != address:
            return
        reply = codec.encode(packet)
        if outgoing.finish:
            if reply == outgoing.reply:
                self._outbox.append((outgoing.finish, address))
            return
        try:
            identity = outgoing.handshake.read_reply(packet.ephemeral + packet.encrypted_static + packet.encrypted_payload)
            if not _proven_identity(identity, outgoing.handshake.responder_public):
                return
            body = outgoing.handshake.write_finish(self._identity)
        except CryptoFailure:
            return
        outgoing.reply = reply
        outgoing.finish = codec.encode(
            IntroFinish(packet.sender, body[:_ENCRYPTED_KEY_SIZE], body[_ENCRYPTED_KEY_SIZE:])
        )
        # Kept (without a retransmission timer) to answer a repeated reply until the attempt times out.
        outgoing.retransmit_at = None
        self._outbox.append((outgoing.finish, address))
        self._events.append(IntroductionCompleted(address, identity))

    def _receive_finish(self, packet: IntroFinish, address: Address) -> None:
        incoming = self._incoming.get(packet.receiver)
        if incoming is None or incoming.address != address:
            return
        try:
            identity = incoming.handshake.read_finish(packet.encrypted_static + packet.encrypted_payload)
        except CryptoFailure:
            return
        if not _proven_identity(identity, incoming.handshake.initiator_public):
            return
        del self._incoming[packet.receiver]
        self._events.append(IntroductionCompleted(address, identity))

    def get_timer(self) -> float | None:
        deadlines = [incoming.retransmit_at for incoming in self._incoming.values()]
        for outgoing in self._outgoing.values():
            deadlines.append(
                outgoing.retransmit_at
                if outgoing.retransmit_at is not None
                else outgoing.began + self._limits.rekey_attempt_time
            )
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> None:
        for index, incoming in list(self._incoming.items()):
            if now >= incoming.retransmit_at:
                if incoming.resends_left == 0:
                    del self._incoming[index]
                    continue
                incoming.resends_left -= 1
                incoming.retransmit_at = now + self._retry_delay()
                self._outbox.append((incoming.reply, incoming.address))
        for index, outgoing in list(self._outgoing.items()):
            if outgoing.retransmit_at is None:
                if now >= outgoing.began + self._limits.rekey_attempt_time:
                    del self._outgoing[index]
            elif now >= outgoing.retransmit_at:
                del self._outgoing[index]
                if now - outgoing.began >= self._limits.rekey_attempt_time:
                    self._events.append(
                        IntroductionFailed(
                            outgoing.address, f"no answer within {self._limits.rekey_attempt_time:g} s"
                        )
                    )
                else:
                    self._send_hello(outgoing.address, now, began=outgoing.began)
