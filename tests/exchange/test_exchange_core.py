"""The exchange core alone: the actions it returns for each input, its timers and its refusals."""

import itertools
from pathlib import Path

import pytest

from ocsync_tui.engine import exchange as ex
from ocsync_tui.engine.messages import (
    Applied,
    BundleMeta,
    Changed,
    Pull,
    Refused,
    ShareOffer,
    Unshare,
    UpToDate,
    decode_bundle_meta,
)

FOLDER = "abcd-efgh-ijkl-mn23"
OTHER_FOLDER = "zzzz-zzzz-zzzz-zzzz"
H1, H2, H3, H4 = ("1" * 40, "2" * 40, "3" * 40, "4" * 40)


class Peer:
    """One core with switchable sharing and window."""

    def __init__(self) -> None:
        self.shared = {FOLDER}
        self.window = True
        self.core = ex.ExchangeCore(lambda folder_id: folder_id in self.shared, lambda: self.window,
                                    request_ids=itertools.count(1).__next__)


@pytest.fixture
def peer() -> Peer:
    return Peer()


def ask(core: ex.ExchangeCore, now: float = 0.0, haves=(H1,)) -> int:
    """From the start of a pull to its Pull message; the request id."""
    [compute] = [action for action in core.message_received(Changed(FOLDER, H2), now)
                 if isinstance(action, ex.ComputeHaves)]
    [send] = core.haves_computed(FOLDER, compute.request_id, list(haves), now)
    assert send == ex.SendMessage(Pull(FOLDER, compute.request_id, tuple(haves)))
    return compute.request_id


def test_one_pull_in_flight_per_folder_and_one_follow_up(peer):
    core = peer.core
    assert core.changed_locally(FOLDER, H1, 0) == [ex.SendMessage(Changed(FOLDER, H1))]
    request_id = ask(core)
    assert core.message_received(Changed(FOLDER, H3), 1) == []
    assert core.message_received(Changed(FOLDER, H4), 2) == []
    meta = BundleMeta(FOLDER, request_id, H3)
    assert core.bundle_offered(meta, 3)
    assert core.bundle_received(meta, Path("b"), 4) == [ex.ApplyBundle(FOLDER, request_id, Path("b"))]
    actions = core.bundle_applied(FOLDER, H3, 5)
    assert actions[:2] == [
        ex.SendMessage(Applied(FOLDER, H3)), ex.PullEnded(FOLDER, "applied", f"now at {H3[:10]}")
    ]
    assert actions[2:] == [ex.ComputeHaves(FOLDER, request_id + 1)], "H4 was announced meanwhile: pull again"


def test_no_follow_up_when_the_pull_brought_what_was_announced(peer):
    core = peer.core
    request_id = ask(core)
    assert core.message_received(Changed(FOLDER, H3), 1) == []
    actions = core.message_received(UpToDate(FOLDER, request_id, H3), 2)
    assert ex.PullEnded(FOLDER, "up-to-date", "already up to date") in actions
    assert not any(isinstance(action, ex.ComputeHaves) for action in actions)


def test_up_to_date_tells_the_peer_our_head_so_it_pulls_next(peer):
    core = peer.core
    core.changed_locally(FOLDER, H1, 0)
    request_id = ask(core, haves=(H1, H2))  # the peer announced H2, which we have already
    actions = core.message_received(UpToDate(FOLDER, request_id, H2), 1)
    assert actions[-1] == ex.SendMessage(Changed(FOLDER, H1))
    assert core.message_received(UpToDate(FOLDER, request_id, H2), 1) == [], "answered once only"


def test_an_unanswered_pull_times_out_and_is_retried_later_backing_off(peer):
    core = peer.core
    request_id = ask(core, now=10.0)
    assert core.get_timer() == 10.0 + ex.ANSWER_TIMEOUT
    assert core.handle_timer(39.9) == []
    assert core.handle_timer(40.0) == [ex.PullEnded(FOLDER, "timed-out", "the peer did not answer in time")]
    assert core.get_timer() == 40.0 + ex.RETRY_FIRST
    assert core.handle_timer(45.0) == [ex.ComputeHaves(FOLDER, request_id + 1)]
    core.haves_computed(FOLDER, request_id + 1, [H1], 45.0)
    core.handle_timer(45.0 + ex.ANSWER_TIMEOUT)
    assert core.get_timer() == 75.0 + 2 * ex.RETRY_FIRST
    # A late answer to a finished request is ignored.
    assert core.message_received(UpToDate(FOLDER, request_id, H2), 80.0) == []


def test_a_bundle_on_its_way_is_timed_by_its_progress(peer):
    core = peer.core
    request_id = ask(core)
    meta = BundleMeta(FOLDER, request_id, H2)
    assert core.bundle_offered(meta, 1.0)
    assert core.get_timer() == 1.0 + ex.TRANSFER_IDLE_TIMEOUT
    core.bundle_progress(meta, 100.0)
    assert core.get_timer() == 100.0 + ex.TRANSFER_IDLE_TIMEOUT
    actions = core.handle_timer(100.0 + ex.TRANSFER_IDLE_TIMEOUT)
    assert actions[0] == ex.CancelIncomingBundle(FOLDER, request_id)
    assert actions[1].outcome == "timed-out"
    assert core.bundle_received(meta, Path("late"), 300.0) == [
        ex.DropReceivedBundle(Path("late"), "no pull of ours asked for this bundle")
    ]


def test_a_failed_transfer_is_retried(peer):
    core = peer.core
    request_id = ask(core)
    meta = BundleMeta(FOLDER, request_id, H2)
    core.bundle_offered(meta, 1.0)
    actions = core.bundle_failed(meta, "hash mismatch", 2.0)
    assert actions == [ex.PullEnded(FOLDER, "failed", "the bundle transfer failed: hash mismatch")]
    assert core.get_timer() == 2.0 + ex.RETRY_FIRST


def test_missing_prerequisites_renegotiate_a_few_times_then_give_up_until_later(peer):
    core = peer.core
    request_id = ask(core)
    for attempt in range(ex.MAX_RENEGOTIATIONS):
        meta = BundleMeta(FOLDER, request_id, H2)
        assert core.bundle_offered(meta, 0)
        core.bundle_received(meta, Path("b"), 0)
        [compute] = core.apply_failed(FOLDER, True, 0, "lacks commits")
        assert compute == ex.ComputeHaves(FOLDER, request_id + 1)
        request_id = compute.request_id
        core.haves_computed(FOLDER, request_id, [H1], 0)
    meta = BundleMeta(FOLDER, request_id, H2)
    core.bundle_offered(meta, 0)
    core.bundle_received(meta, Path("b"), 0)
    assert core.apply_failed(FOLDER, True, 0, "lacks commits") == [ex.PullEnded(FOLDER, "failed", "lacks commits")]
    assert core.get_timer() == ex.RETRY_FIRST


def test_the_giver_keeps_a_bundle_until_applied_and_discards_superseded_ones(peer):
    core = peer.core
    assert core.message_received(Pull(FOLDER, 7, (H1,)), 0) == [ex.MakeBundle(FOLDER, 7, (H1,))]
    [send] = core.bundle_made(FOLDER, 7, Path("b7"), H2, 1)
    assert send.path == Path("b7") and decode_bundle_meta(send.name) == BundleMeta(FOLDER, 7, H2)
    assert core.get_timer() == 1 + ex.KEEP_BUNDLE_FOR
    # The peer pulls again (it timed out): the first bundle goes, the new one is made.
    assert core.message_received(Pull(FOLDER, 8, (H1,)), 2) == [
        ex.DiscardBundle(FOLDER, Path("b7")), ex.MakeBundle(FOLDER, 8, (H1,))
    ]
    # An Applied overtaking the bundle still being made does not cancel it.
    assert core.message_received(Applied(FOLDER, H1), 3) == [
        ex.RecordAckedHead(FOLDER, H1), ex.ComputeHaves(FOLDER, 1)
    ], "the peer's head is not ours: pull from it"
    assert core.bundle_made(FOLDER, 7, Path("late7"), H2, 3) == [ex.DiscardBundle(FOLDER, Path("late7"))]
    [send] = core.bundle_made(FOLDER, 8, Path("b8"), H2, 4)
    assert send.request_id == 8
    assert core.message_received(Applied(FOLDER, H2), 5)[:2] == [
        ex.DiscardBundle(FOLDER, Path("b8")), ex.RecordAckedHead(FOLDER, H2)
    ]
    assert core.message_received(Pull(FOLDER, 9, ()), 6) == [ex.MakeBundle(FOLDER, 9, ())]
    assert core.bundle_made(FOLDER, 9, None, H2, 6) == [ex.SendMessage(UpToDate(FOLDER, 9, H2))]


def test_an_unacknowledged_bundle_is_deleted_after_a_while(peer):
    core = peer.core
    core.message_received(Pull(FOLDER, 7, ()), 0)
    core.bundle_made(FOLDER, 7, Path("b7"), H2, 0)
    assert core.handle_timer(ex.KEEP_BUNDLE_FOR) == [ex.DiscardBundle(FOLDER, Path("b7"))]
    assert core.get_timer() is None


def test_a_giver_that_cannot_bundle_refuses_in_one_line(peer):
    core = peer.core
    core.message_received(Pull(FOLDER, 7, ()), 0)
    [send] = core.bundle_failed_to_make(FOLDER, 7, "cannot read\nthe history", 0)
    assert send == ex.SendMessage(Refused(FOLDER, 7, "the giver cannot bundle the folder: cannot read the history"))


def test_acknowledgements_count_only_for_shared_folders(peer):
    core = peer.core
    core.changed_locally(FOLDER, H2, 0)
    assert core.message_received(Applied(FOLDER, H2), 0) == [ex.RecordAckedHead(FOLDER, H2)], "same head: no pull"
    assert core.message_received(Applied(OTHER_FOLDER, H2), 0) == []
    assert core.message_received(Changed(OTHER_FOLDER, H2), 0) == []
    assert core.message_received(Pull(OTHER_FOLDER, 3, ()), 0) == [
        ex.SendMessage(Refused(OTHER_FOLDER, 3, ex.NOT_SHARED))
    ]


def test_outside_the_window_nothing_leaves_and_the_next_full_exchange_catches_up(peer):
    core = peer.core
    peer.window = False
    assert core.changed_locally(FOLDER, H1, 0) == []
    assert core.message_received(Changed(FOLDER, H2), 0) == []
    assert core.message_received(Pull(FOLDER, 5, ()), 0) == []
    assert core.full_exchange({FOLDER: H1}, 0) == []
    peer.window = True
    actions = core.full_exchange({FOLDER: H1}, 1)
    assert actions == [ex.ComputeHaves(FOLDER, 1), ex.SendMessage(Changed(FOLDER, H1))]


def test_a_pull_that_was_computing_haves_when_the_window_closed_sends_nothing(peer):
    core = peer.core
    [compute] = core.message_received(Changed(FOLDER, H2), 0)
    peer.window = False
    assert core.haves_computed(FOLDER, compute.request_id, [H1], 0) == [
        ex.PullEnded(FOLDER, "abandoned", "the sync window closed")
    ]
    peer.window = True
    assert core.full_exchange({}, 1) == [ex.ComputeHaves(FOLDER, compute.request_id + 1)]


def test_a_giver_whose_window_closed_while_bundling_discards_the_bundle(peer):
    core = peer.core
    core.message_received(Pull(FOLDER, 7, ()), 0)
    peer.window = False
    assert core.bundle_made(FOLDER, 7, Path("b7"), H2, 1) == [ex.DiscardBundle(FOLDER, Path("b7"))]
    assert core.bundle_made(FOLDER, 7, None, H2, 1) == []


def test_local_head_announcements_are_not_repeated(peer):
    core = peer.core
    assert core.changed_locally(FOLDER, H1, 0) == [ex.SendMessage(Changed(FOLDER, H1))]
    assert core.changed_locally(FOLDER, H1, 1) == []
    core.message_received(Changed(FOLDER, H2), 2)  # starts a pull
    assert core.changed_locally(FOLDER, H2, 3) == [], "the peer is on that head already"
    assert core.changed_locally(OTHER_FOLDER, H3, 4) == []


def test_a_manual_apply_counts_as_a_local_change(peer):
    assert peer.core.bundle_applied(FOLDER, H3, 0) == [ex.SendMessage(Changed(FOLDER, H3))]


def test_offers_are_recorded_unless_already_shared_and_unshare_drops_everything(peer):
    core = peer.core
    assert core.message_received(ShareOffer(FOLDER, "Docs"), 0) == []
    assert core.message_received(ShareOffer(OTHER_FOLDER, "Docs"), 0) == [ex.RecordOffer(OTHER_FOLDER, "Docs")]
    request_id = ask(core)
    meta = BundleMeta(FOLDER, request_id, H2)
    core.bundle_offered(meta, 0)
    assert core.message_received(Unshare(FOLDER), 0) == [
        ex.CancelIncomingBundle(FOLDER, request_id),
        ex.PullEnded(FOLDER, "abandoned", "the peer stopped sharing the folder"),
        ex.DropShare(FOLDER),
    ]
    assert core.get_timer() is None
