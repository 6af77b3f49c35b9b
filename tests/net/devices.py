"""Devices, addresses and small helpers shared by the secure channel and introduction tests."""

import random

import nacl.signing

from ocsync_tui.net.events import PayloadReceived
from ocsync_tui.net.secure_channel import SecureChannel
from ocsync_tui.net.session import SessionLimits
from tests.net.fake_link import FakeNetwork, LinkConditions

ALICE_ADDRESS = ("198.51.100.1", 44996)
BOB_ADDRESS = ("203.0.113.2", 44996)
CAROL_ADDRESS = ("198.51.100.3", 44996)
NO_JITTER = SessionLimits(rekey_timeout_jitter=0.0)


def seeded_bytes(seed):
    return random.Random(seed).randbytes


def signing_key(seed):
    return nacl.signing.SigningKey(random.Random(f"device {seed}").randbytes(32))


def public(key):
    return bytes(key.verify_key)


ALICE, BOB, CAROL = signing_key("alice"), signing_key("bob"), signing_key("carol")


def make_pair(conditions=None, seed=0, limits=None, bob_options=None):
    """Alice knows Bob's key and address; Bob knows Alice's key only (he learns her address)."""
    network = FakeNetwork(seed=seed, conditions=conditions or LinkConditions())
    alice = SecureChannel(ALICE, random_bytes=seeded_bytes(seed * 2 + 1), limits=limits)
    bob = SecureChannel(BOB, random_bytes=seeded_bytes(seed * 2 + 2), limits=limits, **(bob_options or {}))
    alice.add_peer(public(BOB), BOB_ADDRESS)
    bob.add_peer(public(ALICE))
    return network, network.attach(alice, ALICE_ADDRESS), network.attach(bob, BOB_ADDRESS)


def payloads(node):
    return [event.payload for event in node.events_of(PayloadReceived)]


def sent_of_type(node, kind):
    return [datagram for datagram in node.sent if datagram.data[0] == kind]
