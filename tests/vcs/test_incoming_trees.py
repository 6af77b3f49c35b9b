import pytest
from dulwich.object_store import MemoryObjectStore
from dulwich.objects import ShaFile, Tree

from ocsync_tui.vcs.incoming_trees import commit_links, validate_commit_trees
from ocsync_tui.vcs.paths import UnsafePathError
from tests.vcs.bundle_craft import COMMIT, FILE_MODE, TREE_MODE, Crafter


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
        type_num, raw = self.store.get_raw(object_id)
        if type_num == Tree.type_num:
            self.reads.append(object_id)
        return type_num, raw

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


TREE_ID, OTHER_ID = b"a" * 40, b"b" * 40
SIGNATURE = b"author A <a@x.invalid> 1 +0000\ncommitter A <a@x.invalid> 1 +0000\n"


def test_commit_links_reads_a_commit_as_git_writes_it():
    raw = b"tree " + TREE_ID + b"\nparent " + OTHER_ID + b"\n" + SIGNATURE + b"\nmessage\ntree " + OTHER_ID + b"\n"
    assert commit_links(raw) == (TREE_ID, [OTHER_ID])
    assert commit_links(b"tree " + TREE_ID + b"\n" + SIGNATURE + b"\n") == (TREE_ID, [])


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        SIGNATURE + b"tree " + TREE_ID + b"\n\n",
        b"tree " + TREE_ID + b"\n" + SIGNATURE + b"tree " + OTHER_ID + b"\n\n",
        b"tree " + TREE_ID + b"\n" + SIGNATURE + b"parent " + OTHER_ID + b"\n\n",
        b"tree " + TREE_ID + b"\n " + OTHER_ID + b"\n" + SIGNATURE + b"\n",
        b"tree " + TREE_ID.upper() + b"\n" + SIGNATURE + b"\n",
        b"tree " + TREE_ID + b"\nparent " + OTHER_ID[:39] + b"\n" + SIGNATURE + b"\n",
    ],
    ids=["empty", "tree not first", "second tree", "late parent", "continued tree", "upper case", "short parent"],
)
def test_commit_links_refuses_any_other_shape(raw):
    assert commit_links(raw) is None


def test_a_commit_with_a_second_tree_line_is_validated_as_the_checkout_reads_it():
    crafter = Crafter()
    good = crafter.files({b"a": b"1"})
    bad = crafter.tree([(b".GIT", FILE_MODE, crafter.blob(b""))])
    for first, second in [(bad, good), (good, bad)]:
        commit = crafter._add(COMMIT, b"tree " + first + b"\n" + SIGNATURE + b"tree " + second + b"\n\ncrafted\n")
        store = stored(crafter)
        if store[commit].tree == bad:
            with pytest.raises(UnsafePathError, match="git"):
                validate_commit_trees(store, [commit])
        else:
            validate_commit_trees(store, [commit])
