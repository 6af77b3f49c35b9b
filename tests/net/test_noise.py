"""The primitives against independent values: WireGuard-go's KDF outputs, libsodium's key conversion."""

import nacl.signing
import pytest

from ocsync_tui.net.noise import (
    CryptoFailure,
    SymmetricState,
    aead_decrypt,
    aead_encrypt,
    dh,
    dh_public,
    hash_,
    kdf,
    static_private_key,
    static_public_key,
    tai64n,
    xaead_decrypt,
    xaead_encrypt,
)

# (key, input, T0, T1, T2) generated with WireGuard-go's KDF1/2/3.
WIREGUARD_GO_KDF = [
    (
        b"",
        b"",
        "8387b46bf43eccfcf349552a095d8315c4055beb90208fb1be23b894bc2ed5d0",
        "58a0e5f6faefccf4807bff1f05fa8a9217945762040bcec2f4b4a62bdfe0e86e",
        "0ce6ea98ec548f8e281e93e32db65621c45eb18dc6f0a7ad94178610a2f7338e",
    ),
    (
        bytes.fromhex("deadbeef"),
        b"",
        "55329dc80e690fd86bd9661f0851c9b3686df2b1fda0347bc3d27958254b32c6",
        "8dfc6d33a8118ffe408b31ddac25f72aee9115a45b69ba176ad012b243834fee",
        "d69e852a2896569ea54a67969aa1800287921dac53ce6db4b4e12192f263c4c4",
    ),
]


@pytest.mark.parametrize("key, data, t0, t1, t2", WIREGUARD_GO_KDF)
def test_kdf_matches_wireguard_go(key, data, t0, t1, t2):
    assert kdf(key, data, 1) == (bytes.fromhex(t0),)
    assert kdf(key, data, 2) == (bytes.fromhex(t0), bytes.fromhex(t1))
    assert kdf(key, data, 3) == (bytes.fromhex(t0), bytes.fromhex(t1), bytes.fromhex(t2))


def test_long_protocol_names_are_hashed_short_ones_padded():
    assert SymmetricState(b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s").hash == hash_(
        b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
    )
    assert SymmetricState(b"Noise_XX_25519_ChaChaPoly_BLAKE2s").hash == hash_(b"Noise_XX_25519_ChaChaPoly_BLAKE2s")
    assert SymmetricState(b"short").hash == b"short" + bytes(27)


def test_identity_key_converts_to_a_matching_x25519_pair():
    signing_key = nacl.signing.SigningKey(bytes(range(32)))
    public = bytes(signing_key.verify_key)
    private = static_private_key(bytes(signing_key) + public)
    assert dh_public(private) == static_public_key(public)


def test_static_public_key_refuses_non_points():
    with pytest.raises(CryptoFailure):
        static_public_key(b"\xff" * 32)


def test_dh_refuses_low_order_points():
    with pytest.raises(CryptoFailure):
        dh(bytes(range(32)), bytes(32))


def test_aead_round_trip_and_forgery():
    key = bytes(range(32))
    sealed = aead_encrypt(key, 7, b"payload", b"ad")
    assert aead_decrypt(key, 7, sealed, b"ad") == b"payload"
    for counter, data, ad in [(8, sealed, b"ad"), (7, sealed, b"AD"), (7, b"\x00" + sealed[1:], b"ad")]:
        with pytest.raises(CryptoFailure):
            aead_decrypt(key, counter, data, ad)


def test_xaead_round_trip_and_forgery():
    key, nonce = bytes(range(32)), bytes(24)
    sealed = xaead_encrypt(key, nonce, b"cookie", b"mac1")
    assert xaead_decrypt(key, nonce, sealed, b"mac1") == b"cookie"
    with pytest.raises(CryptoFailure):
        xaead_decrypt(key, nonce, sealed, b"other")


def test_tai64n_layout_and_rounding():
    stamp = tai64n(1_700_000_000.123456789)
    assert len(stamp) == 12
    assert int.from_bytes(stamp[:8], "big") == 2**62 + 10 + 1_700_000_000
    nanoseconds = int.from_bytes(stamp[8:], "big")
    assert nanoseconds % 2**24 == 0 and 123456789 - 2**24 < nanoseconds <= 123456789
    assert tai64n(1_700_000_000.2) > stamp
