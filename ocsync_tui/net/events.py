"""Events the protocol cores hand upward, as small frozen dataclasses (one module, as h11's `_events`).

Addresses are `(host, port)` tuples as the socket layer gives them. Public keys are the 32-byte
Ed25519 device keys (the identity everywhere), never the derived X25519 keys.

Sections: secure channel (handshake, sessions, introductions) first; other cores append theirs below.
"""

from dataclasses import dataclass
from typing import Any

Address = tuple[Any, ...]


# --- secure channel: ocsync_tui/net/secure_channel.py ---------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionEstablished:
    """A new session with a known peer is usable (first one, or a new one after a lapse)."""

    public_key: bytes
    endpoint: Address


@dataclass(frozen=True, slots=True)
class PayloadReceived:
    """An authenticated, decrypted payload from a known peer (not a keepalive)."""

    public_key: bytes
    payload: bytes
    endpoint: Address


@dataclass(frozen=True, slots=True)
class PeerEndpointChanged:
    """An authenticated packet came from a new address: replies now go there (roaming, NAT rebinding)."""

    public_key: bytes
    endpoint: Address


@dataclass(frozen=True, slots=True)
class UnknownDeviceAttempt:
    """A device we do not know tried to connect; reported once per device per reporting interval."""

    public_key: bytes
    endpoint: Address
    attempts: int


@dataclass(frozen=True, slots=True)
class IntroductionCompleted:
    """First contact with a pending address finished: `public_key` is what that device proved it holds.

    The key is not trusted for folder data until the user confirms it against the device's ID.
    """

    endpoint: Address
    public_key: bytes


@dataclass(frozen=True, slots=True)
class SessionLost:
    """The peer's session expired or the handshake gave up; data queued for it was dropped."""

    public_key: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class IntroductionFailed:
    """An introduction this device started got no valid answer in time."""

    endpoint: Address
    reason: str
