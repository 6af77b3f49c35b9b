"""mac1, mac2 and cookie replies (WireGuard whitepaper section 5.4.4 and 5.4.7).

mac1 = MAC(HASH("mac1----" | responder public key), message up to mac1): a responder drops, without a
reply, anything from a sender that does not know its key. Under load the responder answers an
initiation whose mac2 is not valid with a cookie reply instead of doing any Diffie-Hellman; the cookie
is MAC(secret rotated every 2 minutes, source address), sent encrypted with XChaCha20-Poly1305 under
HASH("cookie--" | responder public key) and bound to the initiation's mac1. The initiator puts it in
mac2 = MAC(cookie, message up to mac2) of its next attempts, proving it receives at its address.
Even with a valid mac2, under load each source host gets at most HANDSHAKES_PER_SECOND (after a burst
of HANDSHAKE_BURST) handshake messages processed, as WireGuard's rate limiter allows.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from typing import Any

from ocsync_tui.net.codec import CookieReply
from ocsync_tui.net.noise import XNONCE_SIZE, CryptoFailure, hash_, mac, xaead_decrypt, xaead_encrypt

COOKIE_SECRET_MAX_AGE = 120.0
# An initiator stops using a cookie a little before the responder's secret may rotate.
COOKIE_SECRET_LATENCY = 5.0
# Once load was seen, cookies stay required this long, as WireGuard's UNDER_LOAD_AFTER_TIME.
UNDER_LOAD_HOLD = 1.0
HANDSHAKES_PER_SECOND = 20
HANDSHAKE_BURST = 5
# Hosts the rate limiter remembers at most; a flood of spoofed sources cannot grow it further.
RATE_LIMITER_HOSTS = 4096
LABEL_MAC1 = b"mac1----"
LABEL_COOKIE = b"cookie--"
_ZERO_MAC = bytes(16)


def _address_bytes(address: Any) -> bytes:
    host, port = address[0], address[1]
    try:
        return ipaddress.ip_address(host).packed + int(port).to_bytes(2, "big")
    except ValueError:
        return repr(tuple(address)).encode()


def mac1_offset(message: bytes) -> int:
    return len(message) - 32


class CookieChecker:
    """The responder's side, for this device's own static public key."""

    def __init__(self, local_public: bytes, random_bytes: Callable[[int], bytes]) -> None:
        self._mac1_key = hash_(LABEL_MAC1 + local_public)
        self._cookie_key = hash_(LABEL_COOKIE + local_public)
        self._random_bytes = random_bytes
        self._secret = b""
        self._secret_born = float("-inf")

    def mac1_valid(self, message: bytes) -> bool:
        end = mac1_offset(message)
        return hmac.compare_digest(mac(self._mac1_key, message[:end]), message[end : end + 16])

    def mac2_valid(self, message: bytes, address: Any, now: float) -> bool:
        if now - self._secret_born > COOKIE_SECRET_MAX_AGE:
            return False
        cookie = mac(self._secret, _address_bytes(address))
        return hmac.compare_digest(mac(cookie, message[:-16]), message[-16:])

    def cookie_reply(self, message: bytes, receiver: int, address: Any, now: float) -> CookieReply:
        if now - self._secret_born > COOKIE_SECRET_MAX_AGE:
            self._secret = self._random_bytes(32)
            self._secret_born = now
        cookie = mac(self._secret, _address_bytes(address))
        nonce = self._random_bytes(XNONCE_SIZE)
        end = mac1_offset(message)
        return CookieReply(receiver, nonce, xaead_encrypt(self._cookie_key, nonce, cookie, message[end : end + 16]))


class MacSigner:
    """The initiator's side, for one remote static public key: fills mac1 and mac2 of what it sends."""

    def __init__(self, remote_public: bytes) -> None:
        self._mac1_key = hash_(LABEL_MAC1 + remote_public)
        self._cookie_key = hash_(LABEL_COOKIE + remote_public)
        self._cookie = b""
        self._cookie_received = float("-inf")
        self._last_mac1 = b""

    def sign(self, message_with_zero_macs: bytes, now: float) -> bytes:
        end = mac1_offset(message_with_zero_macs)
        mac1 = mac(self._mac1_key, message_with_zero_macs[:end])
        self._last_mac1 = mac1
        with_mac1 = message_with_zero_macs[:end] + mac1
        if now - self._cookie_received < COOKIE_SECRET_MAX_AGE - COOKIE_SECRET_LATENCY:
            return with_mac1 + mac(self._cookie, with_mac1)
        return with_mac1 + _ZERO_MAC

    def accept_cookie_reply(self, reply: CookieReply, now: float) -> bool:
        """Store the cookie if the reply answers the last message signed; False (drop) otherwise."""
        if not self._last_mac1:
            return False
        try:
            self._cookie = xaead_decrypt(self._cookie_key, reply.nonce, reply.encrypted_cookie, self._last_mac1)
        except CryptoFailure:
            return False
        self._cookie_received = now
        self._last_mac1 = b""
        return True


class HandshakeLoad:
    """Counts handshake messages per second; above `threshold` the responder is under load."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self._window_start = float("-inf")
        self._count = 0
        self._loaded_until = float("-inf")

    def record(self, now: float) -> bool:
        """Count one handshake message arriving at `now`; return whether cookies are required."""
        if now - self._window_start >= 1.0:
            self._window_start = now
            self._count = 0
        self._count += 1
        if self._count > self.threshold:
            self._loaded_until = now + UNDER_LOAD_HOLD
        return now < self._loaded_until


class SourceRateLimiter:
    """Token bucket per source host (the address without its port, as NAT may vary the port)."""

    def __init__(self, per_second: float = HANDSHAKES_PER_SECOND, burst: int = HANDSHAKE_BURST) -> None:
        self.per_second = per_second
        self.burst = burst
        self._buckets: dict[Any, tuple[float, float]] = {}

    def allow(self, address: Any, now: float) -> bool:
        host = address[0]
        tokens, last = self._buckets.pop(host, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.per_second)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        if len(self._buckets) >= RATE_LIMITER_HOSTS:
            del self._buckets[next(iter(self._buckets))]
        self._buckets[host] = (tokens, now)
        return allowed
