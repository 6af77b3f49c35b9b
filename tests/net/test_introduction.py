"""Introductions (Noise_XX): first contact by address, answered only from allowed addresses."""

import pytest

from ocsync_tui.net import codec
from ocsync_tui.net.events import IntroductionCompleted, IntroductionFailed, UnknownDeviceAttempt
from ocsync_tui.net.handshake import StaticKeyPair
from ocsync_tui.net.introduction import XXInitiator, XXResponder
from ocsync_tui.net.secure_channel import SecureChannel
from ocsync_tui.net.session import SessionLimits
from tests.net.fake_link import FakeNetwork, LinkConditions
from tests.net.devices import (
    ALICE,
    ALICE_ADDRESS,
    BOB,
    BOB_ADDRESS,
    CAROL_ADDRESS,
    public,
    seeded_bytes,
    sent_of_type,
)

h = bytes.fromhex


def test_reproduces_the_noise_xx_vector():
    """Noise_XX_25519_ChaChaPoly_BLAKE2s as published by Noise Explorer (same keys as cacophony's)."""
    initiator = XXInitiator(
        StaticKeyPair.from_private(h("e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1")),
        h("893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a"),
        prologue=b"John Galt",
    )
    responder_static = StaticKeyPair.from_private(
        h("4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893")
    )
    responder = XXResponder(responder_static, prologue=b"John Galt")
    hello = initiator.write_hello(b"Ludwig von Mises")
    assert hello.hex() == "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c79444c756477696720766f6e204d69736573"
    assert responder.read_hello(hello) == b"Ludwig von Mises"
    reply = responder.write_reply(
        b"Murray Rothbard", h("bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b")
    )
    assert reply.hex() == (
        "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f1448088437c365eb362a1c991b0557fe8a7fb187d99346765d9"
        "3ec63db6c1b01504ebeec55a2298d2dbff80eff034d20595153f63a196a6cead1e11b2bb13e336fa13616dd3e8b0a070c882ed3f1a"
        "78c7c06c93"
    )
    assert initiator.read_reply(reply) == b"Murray Rothbard"
    assert initiator.responder_public == responder_static.public
    finish = initiator.write_finish(b"F. A. Hayek")
    assert finish.hex() == (
        "46c3307de83b014258717d97781c1f50936d8b7d50c0722a1739654d10392d415b670c114f79b9a4f80541570f77ce88802efa4220"
        "cff733e7b5668ba38059ec904b4b8eef9448085faf51"
    )
    assert responder.read_finish(finish) == b"F. A. Hayek"


def make_strangers(conditions=None, seed=0):
    """Alice and Bob know nothing of each other's keys."""
    network = FakeNetwork(seed=seed, conditions=conditions or LinkConditions())
    limits = SessionLimits(rekey_timeout_jitter=0.0)
    alice = SecureChannel(ALICE, random_bytes=seeded_bytes(seed * 2 + 1), limits=limits)
    bob = SecureChannel(BOB, random_bytes=seeded_bytes(seed * 2 + 2), limits=limits)
    return network, network.attach(alice, ALICE_ADDRESS), network.attach(bob, BOB_ADDRESS)


@pytest.mark.parametrize(
    "conditions, seed",
    [(None, 0), *((LinkConditions(loss=0.2, duplicate=0.1, corrupt=0.05, jitter=0.05), s) for s in range(1, 6))],
)
def test_introduction_from_a_pending_address_reveals_both_keys(conditions, seed):
    network, alice, bob = make_strangers(conditions, seed)
    bob.core.allow_introduction_from(ALICE_ADDRESS)
    alice.core.start_introduction(BOB_ADDRESS, network.now)
    assert network.run_until(lambda: alice.events and bob.events, 80)
    assert alice.events == [IntroductionCompleted(BOB_ADDRESS, public(BOB))]
    assert bob.events == [IntroductionCompleted(ALICE_ADDRESS, public(ALICE))]
    hello_sizes = {len(d.data) for d in sent_of_type(alice, codec.INTRO_HELLO)}
    reply_sizes = {len(d.data) for d in sent_of_type(bob, codec.INTRO_REPLY)}
    assert max(reply_sizes) <= min(hello_sizes), "no amplification"


def test_hellos_from_other_addresses_get_nothing():
    network, alice, bob = make_strangers()
    bob.core.allow_introduction_from(CAROL_ADDRESS)
    alice.core.start_introduction(BOB_ADDRESS, network.now)
    network.run_for(100.0)
    assert bob.sent == [] and bob.events == []
    assert alice.events == [IntroductionFailed(BOB_ADDRESS, "no answer within 90 s")]
    assert [d.time for d in sent_of_type(alice, codec.INTRO_HELLO)] == [1000.0 + 5.0 * n for n in range(18)]


def test_forbidding_an_address_stops_answers():
    network, alice, bob = make_strangers()
    bob.core.allow_introduction_from(ALICE_ADDRESS)
    bob.core.forbid_introduction_from(ALICE_ADDRESS)
    alice.core.start_introduction(BOB_ADDRESS, network.now)
    network.run_for(10.0)
    assert bob.sent == []


def test_a_forged_finish_completes_nothing():
    network, alice, bob = make_strangers()
    bob.core.allow_introduction_from(ALICE_ADDRESS)

    def forge_finish(datagram):
        if datagram.data[0] == codec.INTRO_FINISH:
            forged = bytearray(datagram.data)
            forged[-1] ^= 1
            network.tap = None
            network.inject(bytes(forged), datagram.source, datagram.destination)
            return False
        return True

    network.tap = forge_finish
    alice.core.start_introduction(BOB_ADDRESS, network.now)
    network.run_for(0.5)
    assert bob.events == []


def test_an_introduction_grants_no_session():
    network, alice, bob = make_strangers()
    bob.core.allow_introduction_from(ALICE_ADDRESS)
    alice.core.start_introduction(BOB_ADDRESS, network.now)
    assert network.run_until(lambda: alice.events and bob.events, 5)
    assert alice.core.peers() == [] and bob.core.peers() == []
    # Alice trusts Bob's key at once; Bob has not confirmed hers: her handshake is an unknown device's.
    alice.core.add_peer(public(BOB), BOB_ADDRESS)
    alice.core.send(public(BOB), b"folder data", network.now)
    network.run_for(1.0)
    assert bob.events[1:] == [UnknownDeviceAttempt(public(ALICE), ALICE_ADDRESS, 1)]
    assert not sent_of_type(bob, codec.RESPONSE) and not sent_of_type(alice, codec.TRANSPORT)
