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


# --- transfers, liveness and path MTU: transfer.py, keepalive.py, pmtu.py -------------------------
# `outgoing` is True on the giver's side. Transfer ids are chosen by the giver (random 64-bit).


@dataclass(frozen=True, slots=True)
class TransferOffered:
    """The peer offers a blob: answer with TransferManager.accept or .decline."""

    public_key: bytes
    transfer_id: int
    sha256: bytes
    size: int
    name: str
    kind: str
    metadata: bytes


@dataclass(frozen=True, slots=True)
class TransferProgress:
    """At most every 100 ms per transfer. `rate_bps` is in bytes per second over the last interval."""

    public_key: bytes
    transfer_id: int
    outgoing: bool
    bytes_done: int
    total: int
    rate_bps: float


@dataclass(frozen=True, slots=True)
class TransferCompleted:
    """The receiver verified the whole blob. `path` (receiver only) is the verified file, which the
    engine removes through PartialStore.remove once it has consumed it; the giver may drop its blob.
    A blob offered again before the engine removed it completes again at once, with the same path."""

    public_key: bytes
    transfer_id: int
    outgoing: bool
    sha256: bytes
    path: Any = None


@dataclass(frozen=True, slots=True)
class TransferFailed:
    """The transfer cannot finish (the data did not match its SHA-256, a disk error); offer it anew."""

    public_key: bytes
    transfer_id: int
    outgoing: bool
    sha256: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class TransferCancelled:
    """The peer cancelled or declined the transfer (local cancels are not reported back)."""

    public_key: bytes
    transfer_id: int
    outgoing: bool
    sha256: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class PeerUp:
    """Authenticated traffic arrives from the peer (first contact, or after PeerDown)."""

    public_key: bytes


@dataclass(frozen=True, slots=True)
class PeerDown:
    """Nothing arrived from the peer for the allowed number of keepalive intervals."""

    public_key: bytes
    silent_for: float


@dataclass(frozen=True, slots=True)
class PathMtuChanged:
    """The largest datagram (UDP payload) confirmed to reach the peer changed."""

    public_key: bytes
    max_datagram_size: int
