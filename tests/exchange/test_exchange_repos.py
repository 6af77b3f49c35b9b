"""Two exchange cores talking through an in-memory queue, with bundles made and applied on real repositories."""

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ocsync_tui.engine import exchange as ex
from ocsync_tui.engine.messages import Applied, BundleMeta, Changed, Pull, Refused, encode_bundle_meta
from ocsync_tui.vcs.negotiation import bundle_for
from tests.conftest import git_fsck_strict
from tests.exchange.driver import Side, Wire
from tests.vcs.devices import make_device, verify_bundle


@pytest.fixture
def wire(tmp_path) -> Wire:
    """A has a few files, B an empty folder; both share A's folder ID with each other."""
    a_device = make_device(tmp_path, "a", {"notes.txt": b"notes\n" * 100, "dir/photo.jpg": b"\xff\xd8" * 500})
    b_device = make_device(tmp_path, "b")
    folder_id = a_device.folder.folder_id
    a = Side(a_device, folder_id, tmp_path / "scratch-a", shared={folder_id})
    b = Side(b_device, folder_id, tmp_path / "scratch-b", shared={folder_id})
    return Wire(a, b)


def settled(wire: Wire) -> Wire:
    wire.deliver_all()
    return wire


def test_a_full_exchange_brings_the_empty_side_everything_and_the_giver_records_the_ack(wire):
    a, b = wire.a, wire.b
    wire.full_exchange(b)
    settled(wire)
    assert b.head() == a.head() and b.device.files() == a.device.files()
    assert a.acked == [(a.folder_id, a.head())]
    assert [ended.outcome for ended in b.pulls_ended] == ["applied"]
    assert b.device.known_head_of(a.device).decode() == a.head()
    assert not any(path.exists() for path in a.made_bundles), "the giver deletes the bundle once acknowledged"


def test_a_commit_propagates_with_a_thin_bundle(wire):
    a, b = wire.a, wire.b
    wire.full_exchange(b)
    settled(wire)
    before = a.head()
    wire.commit(a, "notes.txt", b"edited on a\n")
    assert a.sent_messages[-1] == Changed(a.folder_id, a.head())
    while wire.queue[0][1] != "bundle":
        wire.deliver_one()
    bundle = wire.queue[0][3]
    verify_bundle(b.device.root, bundle)  # the real git accepts it against B's repository
    assert f"-{before}".encode() in bundle.read_bytes().split(b"\n\n", 1)[0], "thin: it builds on A's old head"
    settled(wire)
    assert b.device.files()["notes.txt"] == b"edited on a\n" and b.head() == a.head()
    assert a.acked[-1] == (a.folder_id, a.head())
    last_pull = [message for message in b.sent_messages if isinstance(message, Pull)][-1]
    assert a.head() not in last_pull.haves and b.head() != last_pull.haves[0]


def test_a_change_on_both_sides_converges_to_one_head_on_both_sides(wire):
    a, b = wire.a, wire.b
    wire.full_exchange(b)
    settled(wire)
    wire.commit(a, "notes.txt", b"a's version\n")
    wire.commit(a, "only-a.txt", b"a")
    wire.commit(b, "notes.txt", b"b's version\n")
    wire.commit(b, "only-b.txt", b"b")
    settled(wire)
    assert a.head() == b.head()
    assert a.device.files() == b.device.files()
    files = a.device.files()
    assert files["only-a.txt"] == b"a" and files["only-b.txt"] == b"b"
    assert sorted(content for path, content in files.items() if path.startswith("notes")) == [
        b"a's version\n", b"b's version\n"
    ]
    for side in (a, b):
        git_fsck_strict(side.device.root)
        assert side.acked[-1] == (side.folder_id, side.head()), "each side saw the other apply its final head"
    # Settled for good: nothing more to say.
    wire.full_exchange(a)
    wire.full_exchange(b)
    settled(wire)
    assert a.head() == b.head()


def test_the_acked_head_is_recorded_only_after_applied_arrives(wire):
    a, b = wire.a, wire.b
    wire.full_exchange(b)
    while not (wire.queue and wire.queue[0][1] == "message" and wire.queue[0][0] is a
               and b.sent_messages and isinstance(b.sent_messages[-1], Applied)):
        assert a.acked == []
        wire.deliver_one()
    assert b.head() == a.head(), "B applied the bundle, but A has not heard of it yet"
    assert a.acked == []
    wire.deliver_one()
    assert a.acked == [(a.folder_id, a.head())]


def test_a_folder_not_shared_sends_nothing_but_a_refusal(wire):
    a, b = wire.a, wire.b
    a.shared.clear()
    wire.commit(a, "notes.txt", b"private edit")
    assert a.sent_messages == []
    wire.full_exchange(b)
    settled(wire)
    assert a.sent_messages == [Refused(a.folder_id, b.sent_messages[0].request_id, ex.NOT_SHARED)]
    assert a.sent_bundles == [] and a.made_bundles == []
    assert [ended.outcome for ended in b.pulls_ended] == ["refused"]
    assert b.head() is None
    # A Changed for that folder from B starts nothing on A either.
    wire.commit(b, "from-b.txt", b"b")
    settled(wire)
    assert a.sent_messages[1:] == [] and a.head() != b.head()


def test_a_bundle_for_an_unrequested_folder_is_dropped(wire, tmp_path):
    a, b = wire.a, wire.b
    stray = tmp_path / "stray.bundle"
    info = bundle_for(a.device.folder, [], stray)
    # B made no pull: the offer is declined and a delivered file is dropped unapplied.
    meta = BundleMeta(a.folder_id, 1, info.head)
    assert not b.core.bundle_offered(meta, wire.now)
    wire.run(b, b.core.bundle_received(meta, stray, wire.now))
    assert b.dropped_bundles == ["no pull of ours asked for this bundle"] and not stray.exists()
    assert b.head() is None
    # Not even while B has a pull in flight for another folder or under another request id.
    wire.full_exchange(b)
    request_id = b.sent_messages[-1].request_id
    other_folder = BundleMeta("zzzz-zzzz-zzzz-zzzz", request_id, info.head)
    for wrong in (other_folder, BundleMeta(a.folder_id, request_id + 1, info.head)):
        assert not b.core.bundle_offered(wrong, wire.now)
        bundle_for(a.device.folder, [], stray)
        wire.run(b, b.core.bundle_received(wrong, stray, wire.now))
        assert not stray.exists()
    assert b.head() is None
    settled(wire)  # the real answer still applies
    assert b.head() == a.head()


def test_a_closed_window_lets_no_message_leave(wire):
    a, b = wire.a, wire.b
    wire.full_exchange(b)
    settled(wire)
    a.window_is_open = False
    sent_before = list(a.sent_messages)
    wire.commit(a, "notes.txt", b"edited while closed")
    wire.full_exchange(a)
    wire.commit(b, "from-b.txt", b"b")  # B's window is open: B announces, then pulls when told
    wire.run(b, b.core.full_exchange({b.folder_id: b.head()}, wire.now))
    bundles_before = list(a.sent_bundles)
    settled(wire)
    assert a.sent_messages == sent_before and a.sent_bundles == bundles_before
    assert b.device.files()["notes.txt"] != b"edited while closed"
    assert "from-b.txt" not in a.device.files()
    # The window opens: a full exchange carries both changes. B's pull, which A ignored while closed,
    # times out and is retried.
    a.window_is_open = True
    wire.full_exchange(a)
    settled(wire)
    assert b.head() != a.head()
    assert a.device.files()["from-b.txt"] == b"b"
    wire.advance(ex.ANSWER_TIMEOUT)
    wire.advance(ex.RETRY_FIRST)
    settled(wire)
    assert [ended.outcome for ended in b.pulls_ended][-2:] == ["timed-out", "applied"]
    assert a.head() == b.head()
    assert a.device.files()["from-b.txt"] == b"b" and b.device.files()["notes.txt"] == b"edited while closed"


def test_sync_ignoring_the_window_pulls_while_closed(wire):
    a, b = wire.a, wire.b
    b.window_is_open = False
    wire.full_exchange(b)
    assert b.sent_messages == []
    wire.full_exchange(b, ignore_window=True)
    settled(wire)
    assert b.head() == a.head()


def test_the_window_closing_mid_transfer_drops_the_bundle_on_both_sides(wire):
    a, b = wire.a, wire.b
    wire.full_exchange(b)
    while not (wire.queue and wire.queue[0][1] == "bundle"):
        wire.deliver_one()
    a.window_is_open = b.window_is_open = False
    wire.run(a, a.core.window_closed(wire.now))
    wire.run(b, b.core.window_closed(wire.now))
    assert not any(path.exists() for path in a.made_bundles)
    settled(wire)
    assert b.head() is None
    assert [ended.outcome for ended in b.pulls_ended] == ["abandoned"]
    a.window_is_open = b.window_is_open = True
    wire.run(b, b.core.full_exchange({}, wire.now))  # the abandoned pull was queued
    settled(wire)
    assert b.head() == a.head()


def test_missing_prerequisites_start_a_fresh_negotiation(wire, tmp_path):
    a, b = wire.a, wire.b
    wire.full_exchange(b)
    settled(wire)
    wire.commit(a, "notes.txt", b"second")
    wire.commit(a, "notes.txt", b"third")
    # B pulls; A answers with a bundle built on a commit B does not have (as a stale negotiation would).
    wire.deliver_one()  # Changed → B sends Pull
    wire.deliver_one()  # Changed
    pull = next(item for item in wire.queue if item[0] is a)
    wire.queue.clear()
    request_id = b.sent_messages[-1].request_id
    second = a.device.folder.repo[a.device.head()].parents[0].decode()
    stale = tmp_path / "stale.bundle"
    info = bundle_for(a.device.folder, [second], stale)
    assert pull and info.prerequisites == [second]
    meta = BundleMeta(a.folder_id, request_id, info.head)
    assert b.core.bundle_offered(meta, wire.now)
    wire.run(b, b.core.bundle_received(meta, stale, wire.now))
    fresh = b.sent_messages[-1]
    assert isinstance(fresh, Pull) and fresh.request_id != request_id
    settled(wire)
    assert b.head() == a.head()
    assert [ended.outcome for ended in b.pulls_ended][-1] == "applied"


def test_share_offers_and_unshares(wire):
    a, b = wire.a, wire.b
    b.shared.clear()
    wire.run(a, a.core.offer_share(a.folder_id, "Notes"))
    settled(wire)
    assert b.offers == [(a.folder_id, "Notes")]
    b.shared.add(a.folder_id)  # accepted
    wire.run(a, a.core.offer_share(a.folder_id, "Notes"))
    settled(wire)
    assert b.offers == [(a.folder_id, "Notes")], "an offer of a folder already shared is not recorded again"
    wire.run(a, a.core.withdraw_share(a.folder_id, wire.now))
    a.shared.clear()
    settled(wire)
    assert b.dropped_shares == [a.folder_id] and not b.shared


def test_bundle_meta_names_the_request(wire):
    a, b = wire.a, wire.b
    wire.full_exchange(b)
    settled(wire)
    [meta] = a.sent_bundles
    assert meta == BundleMeta(a.folder_id, b.sent_messages[0].request_id, a.head())
    bundle_action = next(action for action in a.actions if isinstance(action, ex.SendBundle))
    assert bundle_action.name == encode_bundle_meta(meta)


operations = st.lists(
    st.one_of(
        st.tuples(st.just("commit"), st.sampled_from("ab"), st.sampled_from(["notes.txt", "x.txt", "y.txt"]),
                  st.binary(min_size=1, max_size=20)),
        st.tuples(st.just("deliver"), st.integers(0, 10)),
        st.tuples(st.just("advance"), st.sampled_from([1.0, ex.ANSWER_TIMEOUT])),
        st.tuples(st.just("sync"), st.sampled_from("ab")),
    ),
    max_size=14,
)


@settings(max_examples=int(os.environ.get("OCSYNC_EXCHANGE_EXAMPLES", "15")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(operations)
def test_any_order_of_commits_and_deliveries_converges(tmp_path_factory, steps):
    """Commits on both sides, messages and bundles delivered out of order, time passing: once
    everything is delivered and every timer has fired, both sides are on one head with one tree."""
    base = tmp_path_factory.mktemp("random")
    a_device = make_device(base, "a", {"notes.txt": b"start"})
    b_device = make_device(base, "b")
    folder_id = a_device.folder.folder_id
    wire = Wire(Side(a_device, folder_id, base / "scratch-a", shared={folder_id}),
                Side(b_device, folder_id, base / "scratch-b", shared={folder_id}))
    sides = {"a": wire.a, "b": wire.b}
    wire.full_exchange(wire.b)
    for step in steps:
        if step[0] == "commit":
            side = sides[step[1]]
            if side.device.files().get(step[2]) != step[3]:
                wire.commit(side, step[2], step[3])
        elif step[0] == "deliver" and wire.queue:
            wire.deliver_one(step[1] % len(wire.queue))
        elif step[0] == "advance":
            wire.advance(step[1])
        elif step[0] == "sync":
            wire.full_exchange(sides[step[1]])
    wire.settle()
    assert wire.a.head() == wire.b.head()
    assert wire.a.device.files() == wire.b.device.files()
    for side in (wire.a, wire.b):
        git_fsck_strict(side.device.root)
