"""Transport keys of one session and the limits that retire them (WireGuard whitepaper section 6).

A `Keypair` holds the two ChaCha20-Poly1305 keys one handshake produced, the indices that name it on
the wire, the next counter to send and the replay window of counters received. Counters are explicit
in every transport packet and are the AEAD nonce, so packets may arrive in any order; the window,
RFC 6479's ring of 64-bit words as WireGuard implements it, accepts each counter once and refuses
those more than `REPLAY_WINDOW_SIZE` behind the greatest seen.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

REKEY_AFTER_MESSAGES = 2**60
REJECT_AFTER_MESSAGES = 2**64 - 2**13 - 1
REKEY_AFTER_TIME = 120.0
REJECT_AFTER_TIME = 180.0
REKEY_ATTEMPT_TIME = 90.0
REKEY_TIMEOUT = 5.0
# Each handshake retransmission waits REKEY_TIMEOUT plus a random jitter up to this, so that peers
# that lost sync do not retry in lockstep.
REKEY_TIMEOUT_JITTER = 1 / 3
KEEPALIVE_TIMEOUT = 10.0

_WORD_BITS = 64
_RING_WORDS = 128
REPLAY_WINDOW_SIZE = (_RING_WORDS - 1) * _WORD_BITS


@dataclass(frozen=True)
class SessionLimits:
    """When keys are renewed and refused; tests shrink them, production keeps WireGuard's."""

    rekey_after_messages: int = REKEY_AFTER_MESSAGES
    reject_after_messages: int = REJECT_AFTER_MESSAGES
    rekey_after_time: float = REKEY_AFTER_TIME
    reject_after_time: float = REJECT_AFTER_TIME
    rekey_attempt_time: float = REKEY_ATTEMPT_TIME
    rekey_timeout: float = REKEY_TIMEOUT
    rekey_timeout_jitter: float = REKEY_TIMEOUT_JITTER
    keepalive_timeout: float = KEEPALIVE_TIMEOUT


class ReplayWindow:
    __slots__ = ("_greatest", "_ring", "_reject_after")

    def __init__(self, reject_after_messages: int = REJECT_AFTER_MESSAGES) -> None:
        self._greatest = -1
        self._ring = [0] * _RING_WORDS
        self._reject_after = reject_after_messages

    def accept(self, counter: int) -> bool:
        """Record `counter` and return True if it is new and inside the window; call it only after
        the packet authenticated, or a forger could move the window."""
        if counter >= self._reject_after:
            return False
        ring = self._ring
        word = counter >> 6
        greatest = self._greatest
        if counter > greatest:
            current_word = greatest >> 6 if greatest >= 0 else -1
            for step in range(1, min(word - current_word, _RING_WORDS) + 1):
                ring[(current_word + step) % _RING_WORDS] = 0
            self._greatest = counter
        elif greatest - counter > REPLAY_WINDOW_SIZE:
            return False
        slot = word % _RING_WORDS
        bit = 1 << (counter & 63)
        if ring[slot] & bit:
            return False
        ring[slot] |= bit
        return True


class Keypair:
    """One session's keys. A responder may send only once the initiator has used the keys (WireGuard's
    key confirmation), so a replayed initiation can never make it encrypt under keys nobody holds."""

    __slots__ = (
        "local_index", "remote_index", "created", "is_initiator", "sender", "receiver", "send_counter",
        "replay", "confirmed",
    )

    def __init__(
        self,
        sending_key: bytes,
        receiving_key: bytes,
        *,
        local_index: int,
        remote_index: int,
        created: float,
        is_initiator: bool,
        limits: SessionLimits,
    ) -> None:
        self.local_index = local_index
        self.remote_index = remote_index
        self.created = created
        self.is_initiator = is_initiator
        self.sender = ChaCha20Poly1305(sending_key)
        self.receiver = ChaCha20Poly1305(receiving_key)
        self.send_counter = 0
        self.replay = ReplayWindow(limits.reject_after_messages)
        self.confirmed = is_initiator

    def usable_for_sending(self, now: float, limits: SessionLimits) -> bool:
        return (
            self.confirmed
            and self.send_counter < limits.reject_after_messages
            and now - self.created < limits.reject_after_time
        )
