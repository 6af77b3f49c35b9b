"""Noise_IKpsk2 against a published test vector, and the handshake's refusal of tampered messages.

The vector is the Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s case shared by cacophony and Noise Explorer
(prologue "John Galt", their fixed static and ephemeral keys and PSK): reproducing its ciphertexts
byte for byte, through the transport messages, checks every MixHash/MixKey/PSK step of our code.
"""

import pytest

from ocsync_tui.net.handshake import IKInitiator, IKResponder, StaticKeyPair
from ocsync_tui.net.noise import CryptoFailure, aead_decrypt, aead_encrypt, dh

h = bytes.fromhex
PROLOGUE = b"John Galt"
PSK = b"This is my Austrian perspective!"
INITIATOR_STATIC = StaticKeyPair.from_private(h("e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1"))
RESPONDER_STATIC = StaticKeyPair.from_private(h("4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893"))
INITIATOR_EPHEMERAL = h("893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a")
RESPONDER_EPHEMERAL = h("bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b")
MESSAGES = [
    (
        b"Ludwig von Mises",
        "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c7944001e21de9f98ddd8e2ad57527207feb56253c9c94a"
        "9e496782ecfcb2a75fbcaf1b52948cc48daefe660c62119ab5000980c84831215f2441eba616548e832985464cf17e51ee93109008"
        "399a21f7e13f",
    ),
    (
        b"Murray Rothbard",
        "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f144808843cb765f2caef0751b8f007572dab0322217755c0632"
        "f365717edbf34d33e87a",
    ),
    (b"F. A. Hayek", "8153ca9833bc3c1b91a7e66e5f4d4f5b59bf9e64c2f20d15f0bba7"),
    (b"Carl Menger", "07af0c9c86e1b4e80f36b04ff7688d51141af3debd0332f0a705ef"),
    (b"Jean-Baptiste Say", "6ab1467c0448cc78394494abaaf23afce0e234315d6e2624dcbfa8a21c1c4d073d"),
    (b"Eugen B\xf6hm von Bawerk", "dfc346c0d2296ae6cf1acf6f12b8456a1dba228cf8d8b774aacf1c47fc53aa80ebc7a4c292"),
]


def vector_pair():
    initiator = IKInitiator(
        INITIATOR_STATIC, RESPONDER_STATIC.public, INITIATOR_EPHEMERAL, prologue=PROLOGUE, psk=PSK
    )
    responder = IKResponder(RESPONDER_STATIC, prologue=PROLOGUE, psk=PSK)
    return initiator, responder


def test_reproduces_the_noise_ikpsk2_vector():
    initiator, responder = vector_pair()
    first = initiator.write_initiation(MESSAGES[0][0])
    assert first.hex() == MESSAGES[0][1]
    assert responder.read_initiation(first) == MESSAGES[0][0]
    assert responder.initiator_public == INITIATOR_STATIC.public

    second, responder_keys = responder.write_response(MESSAGES[1][0], RESPONDER_EPHEMERAL)
    assert second.hex() == MESSAGES[1][1]
    payload, initiator_keys = initiator.read_response(second)
    assert payload == MESSAGES[1][0]
    assert initiator_keys.sending == responder_keys.receiving
    assert initiator_keys.receiving == responder_keys.sending

    # Transport messages: each direction's counter starts at 0, associated data is empty.
    for number, (plaintext, expected) in enumerate(MESSAGES[2:]):
        sender, receiver = (initiator_keys, responder_keys) if number % 2 == 0 else (responder_keys, initiator_keys)
        counter = number // 2
        ciphertext = aead_encrypt(sender.sending, counter, plaintext, b"")
        assert ciphertext.hex() == expected
        assert aead_decrypt(receiver.receiving, counter, ciphertext, b"") == plaintext


def test_precomputed_static_static_gives_the_same_messages():
    initiator, _ = vector_pair()
    shared = dh(INITIATOR_STATIC.private, RESPONDER_STATIC.public)
    assert initiator.write_initiation(MESSAGES[0][0], static_static=shared).hex() == MESSAGES[0][1]


@pytest.mark.parametrize("position", [0, 31, 32, 79, 80, 95])
def test_any_flipped_byte_of_an_initiation_is_refused(position):
    initiator, responder = vector_pair()
    message = bytearray(initiator.write_initiation(MESSAGES[0][0]))
    message[position] ^= 0x01
    with pytest.raises(CryptoFailure):
        responder.read_initiation(bytes(message))


def test_a_forged_response_leaves_the_attempt_usable():
    initiator, responder = vector_pair()
    responder.read_initiation(initiator.write_initiation(b""))
    response, _ = responder.write_response(b"", RESPONDER_EPHEMERAL)
    forged = response[:-1] + bytes([response[-1] ^ 1])
    with pytest.raises(CryptoFailure):
        initiator.read_response(forged)
    with pytest.raises(CryptoFailure):
        initiator.read_response(response[:20])
    assert initiator.read_response(response)[0] == b""


def test_a_responder_with_another_key_cannot_read_the_initiation():
    initiator, _ = vector_pair()
    stranger = IKResponder(INITIATOR_STATIC, prologue=PROLOGUE, psk=PSK)
    with pytest.raises(CryptoFailure):
        stranger.read_initiation(initiator.write_initiation(b"hello"))
