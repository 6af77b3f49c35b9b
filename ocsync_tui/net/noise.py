"""Cryptographic primitives of WireGuard's handshake, named as its whitepaper (section 5.4) names them.

HASH is BLAKE2s-256, MAC is keyed BLAKE2s-128, HMAC is HMAC-BLAKE2s, KDF1..3 is HKDF over HMAC, DH is
X25519, AEAD is ChaCha20-Poly1305 with a 64-bit little-endian counter nonce, XAEAD is
XChaCha20-Poly1305 (for cookies), TIMESTAMP is TAI64N. `SymmetricState` is the Noise framework's
object of the same name (MixHash, MixKey, MixKeyAndHash, EncryptAndHash, DecryptAndHash, Split); the
handshakes in this package are written in its terms so they can be checked against Noise test vectors.

The static Noise key of a device is the X25519 form of its Ed25519 identity key (libsodium's
conversion), so one key pair is the identity everywhere.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

import nacl.bindings
import nacl.exceptions
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

KEY_SIZE = 32
TAG_SIZE = 16
TIMESTAMP_SIZE = 12
XNONCE_SIZE = 24

# TAI64 labels seconds since 1970 offset by 2**62, plus the 10 leap seconds of 1972 as WireGuard does.
_TAI64_EPOCH = 2**62 + 10
_TIMESTAMP = struct.Struct(">QI")
# The AEAD nonce of a counter: 4 zero bytes and the 64-bit little-endian counter.
COUNTER_NONCE = struct.Struct("<4xQ")


class CryptoFailure(Exception):
    """Authentication or key agreement failed: the packet carrying the input is to be dropped."""


def hash_(data: bytes) -> bytes:
    return hashlib.blake2s(data).digest()


def mac(key: bytes, data: bytes) -> bytes:
    return hashlib.blake2s(data, key=key, digest_size=16).digest()


def hmac_(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.blake2s).digest()


def kdf(chaining_key: bytes, input_key_material: bytes, outputs: int) -> tuple[bytes, ...]:
    """KDF1, KDF2 or KDF3 of the whitepaper: HKDF-extract then `outputs` chained expansions."""
    temporary = hmac_(chaining_key, input_key_material)
    results: list[bytes] = []
    previous = b""
    for counter in range(1, outputs + 1):
        previous = hmac_(temporary, previous + bytes([counter]))
        results.append(previous)
    return tuple(results)


def aead_encrypt(key: bytes, counter: int, plaintext: bytes, associated_data: bytes) -> bytes:
    return ChaCha20Poly1305(key).encrypt(COUNTER_NONCE.pack(counter), plaintext, associated_data)


def aead_decrypt(key: bytes, counter: int, ciphertext: bytes, associated_data: bytes) -> bytes:
    try:
        return ChaCha20Poly1305(key).decrypt(COUNTER_NONCE.pack(counter), ciphertext, associated_data)
    except InvalidTag:
        raise CryptoFailure("AEAD authentication failed") from None


def xaead_encrypt(key: bytes, nonce: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, associated_data, nonce, key)


def xaead_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, associated_data: bytes) -> bytes:
    try:
        return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, associated_data, nonce, key)
    except nacl.exceptions.CryptoError:
        raise CryptoFailure("XAEAD authentication failed") from None


def dh_public(private_key: bytes) -> bytes:
    return nacl.bindings.crypto_scalarmult_base(private_key)


def dh(private_key: bytes, public_key: bytes) -> bytes:
    """X25519; a low-order peer key (all-zero shared secret) is refused, as WireGuard refuses it."""
    try:
        return nacl.bindings.crypto_scalarmult(private_key, public_key)
    except nacl.exceptions.CryptoError:
        raise CryptoFailure("X25519 with a low-order public key") from None


def static_private_key(signing_seed_and_public: bytes) -> bytes:
    """X25519 private key of an Ed25519 signing key (libsodium's 64-byte secret key form)."""
    return nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(signing_seed_and_public)


def static_public_key(ed25519_public_key: bytes) -> bytes:
    """X25519 public key of an Ed25519 public key; raises CryptoFailure for a non-point."""
    try:
        return nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(ed25519_public_key)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        raise CryptoFailure("not an Ed25519 public key") from None


def tai64n(unix_time: float) -> bytes:
    """TAI64N of a wall-clock time, nanoseconds rounded down to 2**24 ns (~16.8 ms), as WireGuard does
    so a timestamp does not leak the sender's fine clock."""
    seconds = int(unix_time // 1)
    nanoseconds = int((unix_time - seconds) * 1e9) & ~0xFFFFFF
    return _TIMESTAMP.pack(_TAI64_EPOCH + seconds, nanoseconds)


class SymmetricState:
    """Noise's SymmetricState (with its CipherState folded in), for ChaChaPoly and BLAKE2s."""

    __slots__ = ("chaining_key", "hash", "key", "nonce")

    def __init__(self, protocol_name: bytes) -> None:
        if len(protocol_name) <= KEY_SIZE:
            self.hash = protocol_name.ljust(KEY_SIZE, b"\0")
        else:
            self.hash = hash_(protocol_name)
        self.chaining_key = self.hash
        self.key: bytes | None = None
        self.nonce = 0

    def copy(self) -> SymmetricState:
        clone = SymmetricState.__new__(SymmetricState)
        clone.chaining_key, clone.hash, clone.key, clone.nonce = self.chaining_key, self.hash, self.key, self.nonce
        return clone

    def mix_hash(self, data: bytes) -> None:
        self.hash = hash_(self.hash + data)

    def mix_key(self, input_key_material: bytes) -> None:
        self.chaining_key, self.key = kdf(self.chaining_key, input_key_material, 2)
        self.nonce = 0

    def mix_key_and_hash(self, input_key_material: bytes) -> None:
        self.chaining_key, hash_input, self.key = kdf(self.chaining_key, input_key_material, 3)
        self.mix_hash(hash_input)
        self.nonce = 0

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        if self.key is None:
            ciphertext = plaintext
        else:
            ciphertext = aead_encrypt(self.key, self.nonce, plaintext, self.hash)
            self.nonce += 1
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        if self.key is None:
            plaintext = ciphertext
        else:
            plaintext = aead_decrypt(self.key, self.nonce, ciphertext, self.hash)
            self.nonce += 1
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[bytes, bytes]:
        """(initiator-to-responder key, responder-to-initiator key)."""
        first, second = kdf(self.chaining_key, b"", 2)
        return first, second
