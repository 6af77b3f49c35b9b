"""The in-memory tree builder: its trees are git's trees, and its deltas rebuild them."""

from dulwich.index import commit_tree
from dulwich.object_store import MemoryObjectStore
from dulwich.objects import Blob
from dulwich.pack import apply_delta
from hypothesis import given, settings
from hypothesis import strategies as st

from ocsync_tui.vcs.commit_builder import PathConflict, TreeBuilder

NAMES = st.sampled_from([b"a", b"b", b"a.txt", b"a-b", b"z", b"dir"])
PATHS = st.lists(NAMES, min_size=1, max_size=3).map(b"/".join)
OPERATIONS = st.lists(st.tuples(st.booleans(), PATHS, st.binary(min_size=1, max_size=4)), max_size=40)


def git_tree_id(files: dict[bytes, bytes]) -> bytes:
    """The root tree id dulwich computes for these files (path -> content)."""
    store = MemoryObjectStore()
    items = []
    for path, content in files.items():
        blob = Blob.from_string(content)
        store.add_object(blob)
        items.append((path, blob.id, 0o100644))
    return commit_tree(store, items)


@settings(max_examples=60, deadline=None)
@given(OPERATIONS)
def test_trees_match_git_and_deltas_rebuild_them(operations):
    builder = TreeBuilder(lambda sha: b"", None)
    files: dict[bytes, bytes] = {}
    root = builder.root_tree()
    for add, path, content in operations:
        if add:
            blob = Blob.from_string(content)
            try:
                builder.set_file(path, 0o100644, blob.sha().digest())
            except PathConflict:
                continue  # a file where a directory is, or the reverse: the committer deletes first
            files[path] = content
        else:
            builder.remove_file(path)
            files.pop(path, None)
        root = builder.root_tree()
        assert root.hex().encode() == git_tree_id(files)
    entries = builder.take_entries()
    raw_by_id = {entry.sha: entry.raw for entry in entries}
    for entry in entries:
        if entry.delta is not None:
            assert b"".join(apply_delta(raw_by_id[entry.delta_base], entry.delta)) == entry.raw
    assert root.hex().encode() == git_tree_id(files)
