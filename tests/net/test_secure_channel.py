"""SecureChannel between two (or three) devices through the seeded fake link, under a fake clock."""

import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocsync_tui.net import codec, handshake
from ocsync_tui.net.cookie import SourceRateLimiter
from ocsync_tui.net.events import (
    PeerEndpointChanged,
    SessionEstablished,
    SessionLost,
    UnknownDeviceAttempt,
)
from ocsync_tui.net.secure_channel import TRANSPORT_OVERHEAD, PeerKeyError, SecureChannel, UnknownPeerError
from ocsync_tui.net.session import SessionLimits
from ocsync_tui.net.unknown_devices import UnknownDevices
from tests.net.devices import (
    ALICE,
    ALICE_ADDRESS,
    BOB,
    BOB_ADDRESS,
    CAROL,
    CAROL_ADDRESS,
    NO_JITTER,
    make_pair,
    payloads,
    public,
    seeded_bytes,
    sent_of_type,
    signing_key,
)
from tests.net.fake_link import LinkConditions


def establish(network, alice, bob):
    alice.core.connect(public(BOB), network.now)
    assert network.run_until(lambda: bob.core.has_session(public(ALICE), network.now), 30)


# --- handshake and data over a terrible network -------------------------------------------------


@pytest.mark.parametrize("loss", [0.0, 0.05, 0.2])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sessions_and_payloads_survive_loss_duplication_reordering_corruption(loss, seed):
    conditions = LinkConditions(loss=loss, duplicate=0.1, corrupt=0.05, delay=0.02, jitter=0.03)
    network, alice, bob = make_pair(conditions, seed)
    sent_to_bob = [b"to bob %d" % i for i in range(600)]
    sent_to_alice = [b"to alice %d" % i for i in range(600)]
    # Payloads sent before the handshake completes wait for it (the first 300), then it is live.
    for index in range(600):
        if index == 300:
            assert network.run_until(lambda: bob.core.has_session(public(ALICE), network.now), 60)
        alice.core.send(public(BOB), sent_to_bob[index], network.now)
        if bob.core.has_session(public(ALICE), network.now):
            bob.core.send(public(ALICE), sent_to_alice[index], network.now)
        network.run_for(0.01)
    network.run_for(2.0)

    assert alice.events_of(SessionEstablished) and bob.events_of(SessionEstablished)
    for received, sent in [(payloads(bob), sent_to_bob), (payloads(alice), sent_to_alice)]:
        assert len(received) == len(set(received)), "a replayed or duplicated packet was accepted"
        assert set(received) <= set(sent), "a corrupted packet was accepted"
    assert len(payloads(bob)) >= (1 - loss) * 600 * 0.8
    assert len(payloads(alice)) >= (1 - loss) * 300 * 0.8
    # No amplification: nothing Bob answers with is larger than the initiations he answers.
    answers = [d for d in bob.sent if d.data[0] in (codec.RESPONSE, codec.COOKIE_REPLY)]
    assert all(len(d.data) <= codec.INITIATION_SIZE for d in answers)


def test_responder_sends_only_after_the_initiator_used_the_keys():
    network, alice, bob = make_pair()
    alice.core.connect(public(BOB), network.now)
    assert network.run_until(lambda: sent_of_type(bob, codec.RESPONSE), 1)
    assert not bob.core.has_session(public(ALICE), network.now)
    assert bob.core.seal(public(ALICE), b"early", network.now) is None
    # Alice confirms the keys with a keepalive as soon as she has them.
    assert network.run_until(lambda: bob.core.has_session(public(ALICE), network.now), 1)
    assert bob.events_of(SessionEstablished) == [SessionEstablished(public(ALICE), ALICE_ADDRESS)]
    assert payloads(bob) == [], "a keepalive is not a payload"


def test_seal_and_open_fast_paths():
    network, alice, bob = make_pair()
    establish(network, alice, bob)
    for size in (0, 1, 1200, 65000):
        payload = os.urandom(size)
        datagram, address = alice.core.seal(public(BOB), payload, network.now)
        assert address == BOB_ADDRESS and len(datagram) == size + TRANSPORT_OVERHEAD
        opened = bob.core.open_transport(datagram, ALICE_ADDRESS, network.now)
        assert opened == (None if size == 0 else (public(ALICE), payload))
        assert bob.core.open_transport(datagram, ALICE_ADDRESS, network.now) is None, "replay"


# --- retransmission timers ------------------------------------------------------------------------


def drop_everything(datagram):
    return False


def test_initiation_is_retransmitted_exactly_every_rekey_timeout():
    network, alice, bob = make_pair(limits=NO_JITTER)
    network.tap = drop_everything
    alice.core.connect(public(BOB), network.now)
    assert alice.core.get_timer() == 1005.0
    network.run_for(21.0)
    assert [d.time for d in sent_of_type(alice, codec.INITIATION)] == [1000.0, 1005.0, 1010.0, 1015.0, 1020.0]
    initiations = {d.data for d in sent_of_type(alice, codec.INITIATION)}
    assert len(initiations) == 5, "each attempt uses a fresh ephemeral key"


def test_retransmission_jitter_comes_from_the_injected_randomness():
    def random_bytes(size):
        return b"\x80\x00" if size == 2 else os.urandom(size)  # jitter: half of the maximum

    channel = SecureChannel(ALICE, random_bytes=random_bytes)
    channel.add_peer(public(BOB), BOB_ADDRESS)
    channel.connect(public(BOB), 1000.0)
    assert channel.get_timer() == 1000.0 + 5.0 + 0.5 / 3


def test_handshake_is_abandoned_after_rekey_attempt_time():
    network, alice, bob = make_pair(limits=NO_JITTER)
    network.tap = drop_everything
    alice.core.send(public(BOB), b"never delivered", network.now)
    network.run_for(120.0)
    assert alice.events_of(SessionLost) == [
        SessionLost(public(BOB), "no handshake answer within 90 s; 1 queued payloads dropped")
    ]
    times = [d.time for d in sent_of_type(alice, codec.INITIATION)]
    assert times == [1000.0 + 5.0 * n for n in range(18)]
    assert alice.core.get_timer() is None


# --- what is answered and what is not -------------------------------------------------------------


def test_replayed_initiation_gets_no_response_and_keeps_the_session():
    network, alice, bob = make_pair()
    establish(network, alice, bob)
    initiation = sent_of_type(alice, codec.INITIATION)[0].data
    answered_before = len(bob.sent)
    for source in (ALICE_ADDRESS, CAROL_ADDRESS):
        network.inject(initiation, source, BOB_ADDRESS)
    network.run_for(1.0)
    assert len(bob.sent) == answered_before
    assert not bob.events_of(PeerEndpointChanged)[1:], "a replay must not move the peer"
    alice.core.send(public(BOB), b"still here", network.now)
    assert network.run_until(lambda: payloads(bob) == [b"still here"], 1)


def test_forged_mac1_gets_no_response():
    network, alice, bob = make_pair()
    network.tap = lambda datagram: datagram.destination != BOB_ADDRESS
    alice.core.connect(public(BOB), network.now)
    network.run_for(0.1)
    initiation = bytearray(sent_of_type(alice, codec.INITIATION)[0].data)
    initiation[-20] ^= 0x01
    network.tap = None
    network.inject(bytes(initiation), ALICE_ADDRESS, BOB_ADDRESS)
    network.run_for(1.0)
    assert bob.sent == [] and bob.events == []


def test_an_initiator_that_does_not_know_our_key_gets_nothing():
    network, alice, bob = make_pair()
    alice.core.add_peer(public(CAROL), BOB_ADDRESS)  # believes Carol's key lives at Bob's address
    alice.core.connect(public(CAROL), network.now)
    network.run_for(1.0)
    assert bob.sent == [] and bob.events == []
    assert len(bob.core.unknown_devices) == 0


def test_under_load_a_cookie_reply_comes_first_and_no_diffie_hellman(monkeypatch):
    network, alice, bob = make_pair(limits=NO_JITTER, bob_options={"cookie_threshold": 0})
    network.tap = lambda datagram: datagram.destination != BOB_ADDRESS
    alice.core.connect(public(BOB), network.now)
    network.run_for(0.1)
    network.tap = None
    initiation = sent_of_type(alice, codec.INITIATION)[0].data

    calls = []
    real_dh = handshake.dh
    monkeypatch.setattr(handshake, "dh", lambda *args: calls.append(args) or real_dh(*args))
    bob.core.receive_datagram(initiation, ALICE_ADDRESS, network.now)
    monkeypatch.undo()
    assert calls == [], "the responder did Diffie-Hellman for an unproven address"
    (reply, destination), = bob.core.datagrams_to_send(network.now)
    assert reply[0] == codec.COOKIE_REPLY and destination == ALICE_ADDRESS
    assert len(reply) < len(initiation)
    # The initiator keeps the cookie; its next attempt (at REKEY_TIMEOUT) carries a valid mac2.
    alice.core.receive_datagram(reply, BOB_ADDRESS, network.now)
    assert network.run_until(lambda: bob.core.has_session(public(ALICE), network.now), 10)
    responses = sent_of_type(bob, codec.RESPONSE)
    assert responses and responses[0].time >= 1005.0
    assert not sent_of_type(bob, codec.COOKIE_REPLY), "the mac2 of the retry was accepted at once"


def test_garbage_truncations_forgeries_and_replays_are_dropped_silently():
    network, alice, bob = make_pair()
    establish(network, alice, bob)
    alice.core.send(public(BOB), b"genuine", network.now)
    network.run_for(0.1)
    genuine = alice.sent[-1].data
    bob_sent, bob_events = len(bob.sent), len(bob.events)
    rng = random.Random(5)
    hostile = [
        b"",
        b"\x04",
        genuine[:31],
        genuine[:-1],
        genuine[:-1] + bytes([genuine[-1] ^ 1]),
        genuine,  # a replay
        genuine + b"\0",
        b"\x04\x01\0\0" + bytes(70_000),
        *(rng.randbytes(rng.randrange(200)) for _ in range(200)),
        *(bytes([kind, 1, 0, 0]) + rng.randbytes(codec.INITIATION_SIZE - 4) for kind in range(1, 8)),
    ]
    for data in hostile:
        network.inject(data, CAROL_ADDRESS, BOB_ADDRESS)
    network.run_for(1.0)
    assert len(bob.sent) == bob_sent and len(bob.events) == bob_events
    alice.core.send(public(BOB), b"after the storm", network.now)
    assert network.run_until(lambda: payloads(bob) == [b"genuine", b"after the storm"], 1)


def test_commands_for_unknown_or_unusable_peers_raise_clear_errors():
    channel = SecureChannel(ALICE)
    with pytest.raises(UnknownPeerError):
        channel.send(public(BOB), b"x", 0.0)
    with pytest.raises(PeerKeyError):
        channel.add_peer(b"\xff" * 32)
    with pytest.raises(PeerKeyError):
        channel.add_peer(public(ALICE))


# --- roaming ------------------------------------------------------------------------------------


def test_session_follows_the_peer_to_a_new_address_mid_stream():
    network, alice, bob = make_pair(LinkConditions(loss=0.05, jitter=0.01), seed=4)
    establish(network, alice, bob)
    new_address = ("198.51.100.77", 50000)
    for index in range(400):
        if index == 200:
            network.move(alice, new_address)
        alice.core.send(public(BOB), b"a%d" % index, network.now)
        bob.core.send(public(ALICE), b"b%d" % index, network.now)
        network.run_for(0.01)
    network.run_for(1.0)
    assert bob.events_of(PeerEndpointChanged)[-1] == PeerEndpointChanged(public(ALICE), new_address)
    assert bob.core.endpoint_of(public(ALICE)) == new_address
    late_to_bob = [p for p in payloads(bob) if int(p[1:]) >= 200]
    late_to_alice = [p for p in payloads(alice) if int(p[1:]) >= 220]
    assert len(late_to_bob) > 150 and len(late_to_alice) > 150
    assert not alice.events_of(SessionLost) and not bob.events_of(SessionLost)


# --- unknown devices ----------------------------------------------------------------------------


def test_unknown_device_is_reported_once_per_interval():
    network, alice, bob = make_pair(limits=NO_JITTER, bob_options={
        "unknown_devices": UnknownDevices(capacity=8, report_interval=62.5)
    })
    carol = SecureChannel(CAROL, random_bytes=seeded_bytes(9), limits=NO_JITTER)
    carol.add_peer(public(BOB), BOB_ADDRESS)
    carol_node = network.attach(carol, CAROL_ADDRESS)
    carol.connect(public(BOB), network.now)
    network.run_for(59.0)
    assert bob.events == [UnknownDeviceAttempt(public(CAROL), CAROL_ADDRESS, 1)]
    assert not any(d.destination == CAROL_ADDRESS for d in bob.sent), "an unknown device gets no answer"
    network.run_for(10.0)
    # Attempts arrive every 5 s; the 14th (at 65 s) is the first a full interval after the report.
    assert bob.events[1:] == [UnknownDeviceAttempt(public(CAROL), CAROL_ADDRESS, 14)]
    assert len(sent_of_type(carol_node, codec.INITIATION)) == 14


def test_unknown_device_table_is_bounded():
    table = UnknownDevices(capacity=3, report_interval=60.0)
    keys = [public(signing_key(n)) for n in range(5)]
    reports = [table.record(key, CAROL_ADDRESS, 1000.0 + n) for n, key in enumerate(keys)]
    assert all(report is not None for report in reports)
    assert len(table) == 3
    assert [device.public_key for device in table] == keys[2:]
    assert table.record(keys[4], CAROL_ADDRESS, 1010.0) is None


# --- rekeying and expiry --------------------------------------------------------------------------


def test_rekey_after_time_loses_nothing_in_flight():
    limits = SessionLimits(rekey_after_time=20.0, reject_after_time=35.0, keepalive_timeout=5.0,
                           rekey_timeout_jitter=0.0)
    network, alice, bob = make_pair(LinkConditions(delay=0.2), limits=limits)
    establish(network, alice, bob)
    sent = []
    for index in range(1000):
        sent.append(b"%d" % index)
        alice.core.send(public(BOB), sent[-1], network.now)
        network.run_for(0.1)
    network.run_for(1.0)
    assert payloads(bob) == sent, "a packet sealed with the previous keys was lost during a rekey"
    initiations = sent_of_type(alice, codec.INITIATION)
    assert len(initiations) >= 5
    # Keys are made when the response arrives; Alice's confirming keepalive leaves at that instant.
    keys_made = sent_of_type(alice, codec.TRANSPORT)[0].time
    assert 20.0 <= initiations[1].time - keys_made < 20.1 + 1e-9, "renewed at the first send after 20 s"
    assert not alice.events_of(SessionLost) and not bob.events_of(SessionLost)


def test_rekey_after_message_count():
    limits = SessionLimits(rekey_after_messages=50, rekey_timeout_jitter=0.0)
    network, alice, bob = make_pair(limits=limits)
    establish(network, alice, bob)
    sent = [b"%d" % index for index in range(400)]
    for payload in sent:
        alice.core.send(public(BOB), payload, network.now)
        network.run_for(0.01)
    network.run_for(1.0)
    assert payloads(bob) == sent
    assert len(sent_of_type(alice, codec.INITIATION)) >= 1 + 400 // 50 - 1


def test_keys_are_refused_after_reject_after_messages():
    limits = SessionLimits(rekey_after_messages=2**40, reject_after_messages=20)
    network, alice, bob = make_pair(limits=limits)
    establish(network, alice, bob)
    sealed = [alice.core.seal(public(BOB), b"x", network.now) for _ in range(25)]
    assert sum(item is not None for item in sealed) == 20 - 1  # the confirming keepalive used one


def test_an_idle_session_expires_after_reject_after_time():
    network, alice, bob = make_pair(limits=NO_JITTER)
    establish(network, alice, bob)
    established = network.now
    network.run_for(200.0)
    for node, peer in ((alice, BOB), (bob, ALICE)):
        (lost,) = node.events_of(SessionLost)
        assert lost == SessionLost(public(peer), "session expired without being renewed")
        assert not node.core.has_session(public(peer), network.now)
    assert established + 180.0 - 0.1 <= network.now


def test_a_failed_renewal_reports_the_loss_once():
    limits = SessionLimits(rekey_after_time=10.0, reject_after_time=20.0, rekey_timeout_jitter=0.0)
    network, alice, bob = make_pair(limits=limits)
    establish(network, alice, bob)
    network.tap = drop_everything
    network.run_for(11.0)
    assert alice.core.seal(public(BOB), b"starts a renewal", network.now) is not None
    network.run_for(200.0)
    assert alice.events_of(SessionLost) == [SessionLost(public(BOB), "no handshake answer within 90 s")]
    assert bob.events_of(SessionLost) == [SessionLost(public(ALICE), "session expired without being renewed")]


# --- data timers: peers that restart, streams that flow one way ------------------------------------


def test_a_restarted_peer_is_reached_again_by_a_new_handshake():
    network, alice, bob = make_pair(limits=NO_JITTER)
    establish(network, alice, bob)
    alice.core.send(public(BOB), b"before", network.now)
    assert network.run_until(lambda: payloads(bob) == [b"before"], 1)
    network.run_for(30.0)

    # Bob restarts: same key, no memory of the session. Alice's packets are now dropped by him.
    restarted = SecureChannel(BOB, random_bytes=seeded_bytes(99), limits=NO_JITTER)
    restarted.add_peer(public(ALICE))
    network.nodes.pop(BOB_ADDRESS)
    bob = network.attach(restarted, BOB_ADDRESS)
    first_unanswered = network.now
    for index in range(300):
        alice.core.send(public(BOB), b"after %d" % index, network.now)
        network.run_for(0.1)
    initiations = sent_of_type(alice, codec.INITIATION)
    assert initiations[-1].time == first_unanswered + 10.0 + 5.0
    received = [int(payload.split()[1]) for payload in payloads(bob)]
    assert 150 <= received[0] <= 152, "delivery resumes right after the new handshake"
    assert received == list(range(received[0], 300))


def test_a_one_way_stream_is_kept_quiet_by_passive_keepalives():
    network, alice, bob = make_pair(limits=NO_JITTER)
    establish(network, alice, bob)
    for index in range(600):
        alice.core.send(public(BOB), b"%d" % index, network.now)
        network.run_for(0.1)
    assert len(sent_of_type(alice, codec.INITIATION)) == 1, "no needless handshakes"
    keepalive_times = [d.time for d in bob.sent if d.data[0] == codec.TRANSPORT]
    assert keepalive_times and all(b - a >= 10.0 for a, b in zip(keepalive_times, keepalive_times[1:]))
    assert len(payloads(bob)) == 600 and payloads(alice) == []


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_no_datagram_makes_the_channel_raise_or_answer_or_report(recorded_exchange, data):
    """Random bytes and mutations of every kind of packet real exchanges produced (handshakes, cookie
    replies, transport, introductions), fed to an established responder and initiator."""
    (network, alice, bob), datagrams = recorded_exchange
    original = data.draw(st.sampled_from(datagrams))
    mutated = bytearray(original)
    for _ in range(data.draw(st.integers(1, 3))):
        mutated[data.draw(st.integers(0, len(mutated) - 1))] ^= data.draw(st.integers(1, 255))
    candidates = [bytes(mutated), bytes(mutated[: data.draw(st.integers(0, len(mutated)))]), data.draw(st.binary())]
    for candidate in candidates:
        for node in (alice, bob):
            node.core.receive_datagram(candidate, CAROL_ADDRESS, network.now)
            node.core.open_transport(candidate, CAROL_ADDRESS, network.now)
            assert node.core.datagrams_to_send(network.now) == []
            assert node.core.next_event() is None
    assert bob.core.has_session(public(ALICE), network.now) and alice.core.has_session(public(BOB), network.now)


@pytest.fixture(scope="module")
def recorded_exchange():
    network, alice, bob = make_pair()
    bob.core.allow_introduction_from(ALICE_ADDRESS)
    establish(network, alice, bob)
    alice.core.send(public(BOB), b"a payload", network.now)
    bob.core.send(public(ALICE), b"an answer", network.now)
    alice.core.start_introduction(BOB_ADDRESS, network.now)
    network.run_for(1.0)
    loaded_network, loaded_alice, loaded_bob = make_pair(bob_options={"cookie_threshold": 0})
    loaded_alice.core.connect(public(BOB), loaded_network.now)
    loaded_network.run_for(1.0)
    assert sent_of_type(loaded_bob, codec.COOKIE_REPLY)
    datagrams = [d.data for node in (alice, bob, loaded_bob) for d in node.sent]
    for node in (alice, bob):
        node.events.clear()
    return (network, alice, bob), datagrams



@pytest.mark.parametrize("seed", range(3))
def test_simultaneous_handshakes_from_both_sides_settle(seed):
    network, alice, bob = make_pair(LinkConditions(delay=0.05, jitter=0.02), seed=seed, limits=NO_JITTER)
    bob.core.set_endpoint(public(ALICE), ALICE_ADDRESS)
    alice.core.connect(public(BOB), network.now)
    bob.core.connect(public(ALICE), network.now)
    for index in range(100):
        alice.core.send(public(BOB), b"a%d" % index, network.now)
        bob.core.send(public(ALICE), b"b%d" % index, network.now)
        network.run_for(0.05)
    network.run_for(1.0)
    assert sorted(payloads(bob)) == sorted(b"a%d" % i for i in range(100))
    assert sorted(payloads(alice)) == sorted(b"b%d" % i for i in range(100))


def test_under_load_each_host_gets_a_limited_share_of_diffie_hellman(monkeypatch):
    network, alice, bob = make_pair(limits=NO_JITTER, bob_options={"cookie_threshold": 0})
    establish(network, alice, bob)
    # Her first initiation drew a cookie reply; the retry carries a valid mac2. Replay it in a flood.
    cookie_reply, retry = sent_of_type(bob, codec.COOKIE_REPLY), sent_of_type(alice, codec.INITIATION)[1]
    assert cookie_reply and retry.data[-16:] != bytes(16)
    initiation = retry.data
    calls = []
    real_dh = handshake.dh
    monkeypatch.setattr(handshake, "dh", lambda *args: calls.append(args) or real_dh(*args))
    for step in range(100):  # 100 copies within one second, from Alice's host
        bob.core.receive_datagram(initiation, ALICE_ADDRESS, network.now + step / 100)
    # One DH per processed initiation (the static-static one is precomputed): a burst of 5, 20/s.
    assert 5 <= len(calls) <= 5 + 20 + 1
    assert bob.core.datagrams_to_send(network.now) == [], "replays are never answered"


def test_source_rate_limiter_buckets_by_host():
    limiter = SourceRateLimiter(per_second=20, burst=5)
    assert [limiter.allow(("198.51.100.1", port), 0.0) for port in range(7)] == [True] * 5 + [False] * 2
    assert limiter.allow(("198.51.100.2", 1), 0.0)
    assert limiter.allow(("198.51.100.1", 1), 0.05) and not limiter.allow(("198.51.100.1", 1), 0.05)


def test_an_initiator_under_load_makes_the_responder_prove_its_address_too():
    network, alice, bob = make_pair(limits=NO_JITTER)
    loaded = SecureChannel(ALICE, random_bytes=seeded_bytes(7), limits=NO_JITTER, cookie_threshold=0)
    loaded.add_peer(public(BOB), BOB_ADDRESS)
    network.nodes.pop(ALICE_ADDRESS)
    alice = network.attach(loaded, ALICE_ADDRESS)
    alice.core.connect(public(BOB), network.now)
    assert network.run_until(lambda: bob.core.has_session(public(ALICE), network.now), 30)
    assert [(d.time, d.data[0]) for d in alice.sent] == [
        (1000.0, codec.INITIATION), (1000.02, codec.COOKIE_REPLY), (1005.0, codec.INITIATION),
        (1005.02, codec.TRANSPORT),
    ]
    assert [(d.time, d.data[0]) for d in bob.sent] == [(1000.01, codec.RESPONSE), (1005.01, codec.RESPONSE)]


def test_a_removed_peer_is_forgotten():
    network, alice, bob = make_pair()
    establish(network, alice, bob)
    bob.core.remove_peer(public(ALICE))
    assert bob.core.peers() == [] and bob.core.get_timer() is None
    alice.core.send(public(BOB), b"into the void", network.now)
    network.run_for(1.0)
    assert payloads(bob) == []
    with pytest.raises(UnknownPeerError):
        bob.core.send(public(ALICE), b"x", network.now)
