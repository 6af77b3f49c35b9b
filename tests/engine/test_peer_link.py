"""PeerLink without sockets: two devices (a SecureChannel and a PeerLink each) over the seeded fake
network under a fake clock, driven the way the trio Endpoint drives them."""

import hashlib
import os
from pathlib import Path

import nacl.signing

from ocsync_tui.net.blob_source import BytesBlobSource
from ocsync_tui.net.events import (
    PathMtuChanged,
    PeerDown,
    PeerEndpointChanged,
    PeerUp,
    SessionEstablished,
    TransferCompleted,
    TransferOffered,
)
from ocsync_tui.net.peer_link import PeerLink, PeerLinkSettings
from ocsync_tui.net.pmtu import BASE_PLPMTU
from ocsync_tui.net.secure_channel import SecureChannel
from tests.net.fake_link import FakeNetwork, LinkConditions

ROUTE_MAX = 9000


class Device:
    """One device's cores as a datagram core for the fake network: what Endpoint._loop does per turn."""

    def __init__(self, seed: int, state_dir: Path, now: float, settings: PeerLinkSettings) -> None:
        self.channel = SecureChannel(nacl.signing.SigningKey(bytes([seed]) * 32))
        self.public_key = self.channel.public_key
        self.state_dir = state_dir
        self.settings = settings
        self.now = now
        self.links: dict[bytes, PeerLink] = {}
        self.events: list[object] = []

    def add_peer(self, public_key: bytes, address=None) -> PeerLink:
        self.channel.add_peer(public_key, address)
        link = self.links[public_key] = PeerLink(public_key, self.state_dir, self.settings, self.now)
        return link

    def receive_datagram(self, data: bytes, address, now: float) -> None:
        if data[:1] == b"\x04":
            opened = self.channel.open_transport(data, address, now)
            if opened is not None:
                self.links[opened[0]].receive_payload(opened[1], now)
        else:
            self.channel.receive_datagram(data, address, now)
        self._channel_events(now)

    def datagrams_to_send(self, now: float):
        self._channel_events(now)
        out = self.channel.datagrams_to_send(now)
        for link in self.links.values():
            out.extend(link.datagrams_to_send(self.channel, now))
            while (event := link.next_event()) is not None:
                self.events.append(event)
                if isinstance(event, TransferOffered):
                    link.accept(event.transfer_id, now)
        self._channel_events(now)
        return out + self.channel.datagrams_to_send(now)

    def get_timer(self):
        timers = [self.channel.get_timer(), *(link.get_timer() for link in self.links.values())]
        return min((timer for timer in timers if timer is not None), default=None)

    def handle_timer(self, now: float) -> None:
        self.channel.handle_timer(now)
        for link in self.links.values():
            timer = link.get_timer()
            if timer is not None and timer <= now:
                link.handle_timer(now)

    def _channel_events(self, now: float) -> None:
        while (event := self.channel.next_event()) is not None:
            self.events.append(event)
            link = self.links.get(getattr(event, "public_key", b""))
            if isinstance(event, SessionEstablished) and link is not None:
                link.on_session_established(event.endpoint, ROUTE_MAX, now)
            elif isinstance(event, PeerEndpointChanged) and link is not None:
                link.on_path_changed(event.endpoint, ROUTE_MAX, now)

    def of(self, kind: type) -> list:
        return [event for event in self.events if isinstance(event, kind)]


def make_pair(tmp_path: Path, conditions: LinkConditions, settings: PeerLinkSettings = PeerLinkSettings()):
    network = FakeNetwork(seed=4, conditions=conditions)
    giver = Device(1, tmp_path / "giver", network.now, settings)
    taker = Device(2, tmp_path / "taker", network.now, settings)
    giver_link = giver.add_peer(taker.public_key, ("taker", 1))
    taker.add_peer(giver.public_key)
    network.attach(giver, ("giver", 1))
    network.attach(taker, ("taker", 1))
    return network, giver, taker, giver_link


def test_a_transfer_over_a_lossy_network_grows_to_the_probed_size_and_arrives(tmp_path: Path) -> None:
    conditions = LinkConditions(loss=0.05, duplicate=0.02, corrupt=0.02, delay=0.01, jitter=0.004)
    network, giver, taker, giver_link = make_pair(tmp_path, conditions)
    blob = os.urandom(3_000_000)
    giver_link.offer(BytesBlobSource(blob), network.now)
    grown = PathMtuChanged(taker.public_key, ROUTE_MAX)
    assert network.run_until(
        lambda: bool(taker.of(TransferCompleted)) and bool(giver.of(TransferCompleted)) and grown in giver.of(PathMtuChanged),
        120,
    )
    [completed] = taker.of(TransferCompleted)
    assert hashlib.sha256(Path(completed.path).read_bytes()).digest() == hashlib.sha256(blob).digest()
    assert max(len(sent.data) for sent in network.nodes[("giver", 1)].sent) == ROUTE_MAX
    assert giver_link.transfers.congestion.max_datagram_size == ROUTE_MAX


def test_full_size_data_vanishing_mid_transfer_falls_back_to_the_base_size(tmp_path: Path) -> None:
    network, giver, taker, giver_link = make_pair(tmp_path, LinkConditions(delay=0.01))
    blob = os.urandom(6_000_000)
    giver_link.offer(BytesBlobSource(blob), network.now)
    assert network.run_until(lambda: giver_link.transfers.congestion.max_datagram_size == ROUTE_MAX, 30)
    network.tap = lambda datagram: len(datagram.data) <= 1500  # the route changed under the transfer
    changed_at = network.now
    assert network.run_until(lambda: giver_link.pmtu.max_datagram_size == BASE_PLPMTU, 30)
    # The data's probe timeouts tell, long before the prober's own validation (every 30 s) would.
    assert network.now - changed_at < 5
    assert network.run_until(lambda: bool(taker.of(TransferCompleted)) and bool(giver.of(TransferCompleted)), 120)
    [completed] = taker.of(TransferCompleted)
    assert Path(completed.path).read_bytes() == blob


def test_nothing_but_a_handshake_leaves_before_the_session_exists(tmp_path: Path) -> None:
    network, giver, taker, giver_link = make_pair(tmp_path, LinkConditions(loss=1.0))
    giver_link.offer(BytesBlobSource(b"x" * 10_000), network.now)
    network.run_for(12)
    sent = network.nodes[("giver", 1)].sent
    # Initiations only (type 1), retried every REKEY_TIMEOUT: no transfer frame was spent into the void.
    assert sent and {datagram.data[0] for datagram in sent} == {1}
    assert len(sent) == 3


def test_keepalives_mark_the_peer_up_then_down_when_the_network_fails(tmp_path: Path) -> None:
    settings = PeerLinkSettings(keepalive_interval=1.0, keepalive_misses=2)
    network, giver, taker, _ = make_pair(tmp_path, LinkConditions(), settings)
    assert network.run_until(lambda: bool(giver.of(PeerUp)), 5)
    network.conditions.loss = 1.0
    assert network.run_until(lambda: bool(giver.of(PeerDown)), 10)
    assert giver.of(PeerDown)[0].public_key == taker.public_key
