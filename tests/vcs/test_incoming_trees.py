import pytest
from dulwich.object_store import MemoryObjectStore
from dulwich.objects import ShaFile

from ocsync_tui.vcs.incoming_trees import validate_commit_trees
from ocsync_tui.vcs.paths import UnsafePathError
from tests.vcs.bundle_craft import FILE_MODE, TREE_MODE, Crafter


def stored(crafter: Crafter) -> MemoryObjectStore:
    store = MemoryObjectStore()
    for entry in crafter.entries.values():
        store.add_object(ShaFile.from_raw_string(entry.type_num, entry.raw))
    return store


class CountingStore:
    """Counts tree reads, to show each tree object is checked once."""

    def __init__(self, store: MemoryObjectStore) -> None:
        self.store = store
        self.reads: list[bytes] = []

    def get_raw(self, object_id: bytes):
        self.reads.append(object_id)
        return self.store.get_raw(object_id)

    def __getitem__(self, object_id: bytes):
        return self.store[object_id]


def test_each_tree_is_read_once_across_a_history_of_per_file_commits():
    crafter = Crafter()
    files = {f"d{n % 4}/f{n}".encode(): b"%d" % n for n in range(40)}
    commits, parent, current = [], [], {}
    for path, content in files.items():
        current[path] = content
        commit = crafter.commit(crafter.files(dict(current)), parent)
        commits.append(commit)
        parent = [commit]
    store = CountingStore(stored(crafter))
    validate_commit_trees(store, commits)
    assert len(store.reads) == len(set(store.reads))
    # Each commit makes one new root and one new subtree.
    assert len(store.reads) <= 2 * len(commits)


def test_a_bad_tree_in_any_commit_is_refused():
    crafter = Crafter()
    good = crafter.commit(crafter.files({b"a/x": b"1"}))
    git_alias = crafter.tree([(b".GIT", FILE_MODE, crafter.blob(b""))])
    bad = crafter.commit(crafter.tree([(b"a", TREE_MODE, git_alias)]), [good])
    later = crafter.commit(crafter.files({b"a/x": b"2"}), [bad])
    with pytest.raises(UnsafePathError, match="git"):
        validate_commit_trees(stored(crafter), [good, bad, later])


def test_a_tree_valid_below_the_root_is_still_checked_as_a_root():
    crafter = Crafter()
    with_marker = crafter.tree([(b".ocsync-folder", FILE_MODE, crafter.blob(b"id"))])
    nested = crafter.commit(crafter.tree([(b"sub", TREE_MODE, with_marker)]))
    at_top = crafter.commit(with_marker, [nested])
    store = stored(crafter)
    validate_commit_trees(store, [nested])
    with pytest.raises(UnsafePathError, match="marker"):
        validate_commit_trees(store, [nested, at_top])
