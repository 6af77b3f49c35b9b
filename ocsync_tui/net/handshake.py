"""Noise_IKpsk2 exactly as WireGuard runs it (whitepaper section 5.4.2-5.4.4), as two small objects.

    <- s
    ...
    -> e, es, s, ss, {payload}
    <- e, ee, se, psk, {payload}

CONSTRUCTION and IDENTIFIER (the Noise prologue) are ours; the PSK is 32 zero bytes. The objects know
nothing of packets: `secure_channel` frames their bytes into codec packets, adds mac1/mac2 and indices.
The prologue, PSK and ephemeral key are parameters so the construction can be checked against
published Noise test vectors.

Initiator message body: ephemeral (32) | encrypted static (48) | encrypted payload (len + 16).
Responder message body: ephemeral (32) | encrypted payload (len + 16).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ocsync_tui.net.noise import (
    KEY_SIZE,
    TAG_SIZE,
    CryptoFailure,
    SymmetricState,
    dh,
    dh_public,
)

CONSTRUCTION = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER = b"ocsync v1 noise IKpsk2"
ZERO_PSK = bytes(KEY_SIZE)
ENCRYPTED_STATIC_SIZE = KEY_SIZE + TAG_SIZE


@dataclass(frozen=True)
class StaticKeyPair:
    private: bytes
    public: bytes

    @classmethod
    def from_private(cls, private: bytes) -> StaticKeyPair:
        return cls(private, dh_public(private))


@dataclass(frozen=True)
class TransportKeys:
    """Keys from Split(): `sending` for this side's packets, `receiving` for the peer's."""

    sending: bytes
    receiving: bytes


def _initial_state(responder_public: bytes, prologue: bytes) -> SymmetricState:
    state = SymmetricState(CONSTRUCTION)
    state.mix_hash(prologue)
    state.mix_hash(responder_public)
    return state


class _InitialStateCache:
    """The state after the prologue and the responder's static key is the same for every handshake
    with that responder; computing it once per key saves two hashes per packet."""

    def __init__(self) -> None:
        self._states: dict[tuple[bytes, bytes], SymmetricState] = {}

    def get(self, responder_public: bytes, prologue: bytes) -> SymmetricState:
        key = (responder_public, prologue)
        state = self._states.get(key)
        if state is None:
            if len(self._states) > 4096:
                self._states.clear()
            state = self._states[key] = _initial_state(responder_public, prologue)
        return state.copy()


_initial_states = _InitialStateCache()


class IKInitiator:
    """One handshake attempt by the side that knows the responder's static key."""

    def __init__(
        self,
        static: StaticKeyPair,
        responder_public: bytes,
        ephemeral_private: bytes,
        *,
        prologue: bytes = IDENTIFIER,
        psk: bytes = ZERO_PSK,
    ) -> None:
        self._static = static
        self._responder_public = responder_public
        self._ephemeral = StaticKeyPair.from_private(ephemeral_private)
        self._psk = psk
        self._state = _initial_states.get(responder_public, prologue)

    def write_initiation(self, payload: bytes, static_static: bytes | None = None) -> bytes:
        """`static_static` is DH(s_i, s_r), which a peer table may precompute once per peer."""
        state = self._state
        ephemeral = self._ephemeral.public
        state.mix_hash(ephemeral)
        state.mix_key(ephemeral)
        state.mix_key(dh(self._ephemeral.private, self._responder_public))
        encrypted_static = state.encrypt_and_hash(self._static.public)
        state.mix_key(static_static if static_static is not None else dh(self._static.private, self._responder_public))
        return ephemeral + encrypted_static + state.encrypt_and_hash(payload)

    def read_response(self, body: bytes) -> tuple[bytes, TransportKeys]:
        """Return (payload, keys) or raise CryptoFailure; the attempt stays usable after a failure."""
        if len(body) < KEY_SIZE + TAG_SIZE:
            raise CryptoFailure("response too short")
        state = self._state.copy()
        responder_ephemeral = body[:KEY_SIZE]
        state.mix_hash(responder_ephemeral)
        state.mix_key(responder_ephemeral)
        state.mix_key(dh(self._ephemeral.private, responder_ephemeral))
        state.mix_key(dh(self._static.private, responder_ephemeral))
        state.mix_key_and_hash(self._psk)
        payload = state.decrypt_and_hash(body[KEY_SIZE:])
        sending, receiving = state.split()
        return payload, TransportKeys(sending, receiving)


class IKResponder:
    """Reads one initiation; the caller decides, from the initiator's static key, whether to answer."""

    def __init__(
        self,
        static: StaticKeyPair,
        *,
        prologue: bytes = IDENTIFIER,
        psk: bytes = ZERO_PSK,
    ) -> None:
        self._static = static
        self._psk = psk
        self._state = _initial_states.get(static.public, prologue)
        self.initiator_ephemeral = b""
        self.initiator_public = b""

    def read_initiation(
        self, body: bytes, static_static: Callable[[bytes], bytes | None] | None = None
    ) -> bytes:
        """Authenticate the initiation and return its payload; `initiator_public` is then set.

        `static_static(initiator_public)` may return a precomputed DH(s_r, s_i). Raises CryptoFailure.
        """
        if len(body) < KEY_SIZE + ENCRYPTED_STATIC_SIZE + TAG_SIZE:
            raise CryptoFailure("initiation too short")
        state = self._state
        ephemeral = body[:KEY_SIZE]
        state.mix_hash(ephemeral)
        state.mix_key(ephemeral)
        state.mix_key(dh(self._static.private, ephemeral))
        initiator_public = state.decrypt_and_hash(body[KEY_SIZE : KEY_SIZE + ENCRYPTED_STATIC_SIZE])
        shared = static_static(initiator_public) if static_static is not None else None
        state.mix_key(shared if shared is not None else dh(self._static.private, initiator_public))
        payload = state.decrypt_and_hash(body[KEY_SIZE + ENCRYPTED_STATIC_SIZE :])
        self.initiator_ephemeral = ephemeral
        self.initiator_public = initiator_public
        return payload

    def write_response(self, payload: bytes, ephemeral_private: bytes) -> tuple[bytes, TransportKeys]:
        state = self._state
        ephemeral = StaticKeyPair.from_private(ephemeral_private)
        state.mix_hash(ephemeral.public)
        state.mix_key(ephemeral.public)
        state.mix_key(dh(ephemeral.private, self.initiator_ephemeral))
        state.mix_key(dh(ephemeral.private, self.initiator_public))
        state.mix_key_and_hash(self._psk)
        encrypted = state.encrypt_and_hash(payload)
        initiator_to_responder, responder_to_initiator = state.split()
        return ephemeral.public + encrypted, TransportKeys(responder_to_initiator, initiator_to_responder)
