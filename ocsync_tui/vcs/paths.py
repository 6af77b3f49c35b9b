"""Which tree paths may reach a user's disk.

A peer's tree decides where files are written, so every name in it is checked before anything is merged
or written: the names git itself refuses (read-cache.c verify_path, with is_hfs_dotgit and
is_ntfs_dotgit, which real git applies on every platform by default), names that are not UTF-8, and the
folder marker. A disk that folds case or ignores some Unicode code points must not be tricked into
writing inside `.git`, so `.git` is compared the way such disks compare names.
"""

import re
import unicodedata
from operator import itemgetter, lt

from dulwich.errors import ObjectFormatException
from dulwich.object_store import DEFAULT_MAX_TREE_DEPTH, BaseObjectStore
from dulwich.objects import Tree, parse_tree

from ocsync_tui.errors import OcsyncError

FOLDER_MARKER = ".ocsync-folder"
NAME_MAX_BYTES = 255  # the longest file name ext4, APFS, NTFS and their kin hold
PATH_MAX_BYTES = 4096  # the longest path Linux system calls accept (macOS: 1024)

REGULAR_FILE_MODE = 0o100644
EXECUTABLE_FILE_MODE = 0o100755
SYMLINK_MODE = 0o120000
DIRECTORY_MODE = 0o040000
SUBMODULE_MODE = 0o160000
FILE_MODES = frozenset({REGULAR_FILE_MODE, EXECUTABLE_FILE_MODE, SYMLINK_MODE})

# Code points HFS+ drops when comparing names (git's utf8.c next_hfs_char), so ".g\u200cit" is ".git".
_HFS_IGNORED = dict.fromkeys(
    [0x200C, 0x200D, 0x200E, 0x200F, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E]
    + list(range(0x206A, 0x2070))
    + [0xFEFF]
)
# Each name with the 8.3 short names NTFS may give it, as git's is_ntfs_dot_generic lists them: `.git`
# is always first in its directory (so only GIT~1), the others may be ~1 to ~4 or a hashed fallback.
_GIT = re.compile(r"\.git|git~1")
_GITMODULES = re.compile(r"\.gitmodules|gitmod~[1-4]|gi7eba~[1-9][0-9]*")
_MARKER = re.compile(re.escape(FOLDER_MARKER) + r"|ocsync~[1-4]")
# An ASCII name without one of these words is none of the names refused below (temp names included).
_WORD_IN_ALIASED_NAMES = re.compile(rb"git|gi7eba|ocsync", re.IGNORECASE)
_TREE_OBJECT_TYPE = Tree.type_num
_TOO_LONG = f"longer than {PATH_MAX_BYTES} bytes, more than a system call accepts"
_TOO_DEEP = f"folders nested {DEFAULT_MAX_TREE_DEPTH} deep or more, deeper than git tools walk"


class UnsafePathError(OcsyncError):
    """A path from a tree that must never be written to disk."""


def _shown(path: bytes) -> str:
    return repr(path.decode("utf-8", "backslashreplace"))


def _aliases_match(pattern: re.Pattern[str], aliases: set[str]) -> bool:
    return any(pattern.fullmatch(alias) for alias in aliases)


def _disk_aliases(name: str) -> set[str]:
    """What a case-folding, HFS+ or NTFS disk may take the pieces of this name to mean.

    NTFS also reads a backslash as a separator and `name:stream` as `name`, and drops trailing dots
    and spaces; git refuses such spellings of `.git` everywhere (core.protectNTFS), and so do we.
    """
    aliases = set()
    for piece in name.translate(_HFS_IGNORED).split("\\"):
        aliases.add(piece.split(":", 1)[0].rstrip(" .").casefold())
    return aliases


def _refusal(name: bytes, *, top_level: bool, mode: int) -> str | None:
    """Why `name` may not be one component of a path in a synced folder, or None if it may."""
    if not name:
        return "it has an empty component"
    if b"\0" in name:
        return "it contains a NUL byte"
    if b"/" in name:
        return "a single tree entry name contains '/'"
    if len(name) > NAME_MAX_BYTES:
        return f"a name longer than {NAME_MAX_BYTES} bytes fits on no disk"
    if name in (b".", b".."):
        return f"{name.decode()!r} is not a file name"
    if name.isascii() and not _WORD_IN_ALIASED_NAMES.search(name):
        return None  # the common case, kept fast: a folder's tree is checked name by name on every merge
    # Imported here: checkout imports this module (through disk_naming).
    from ocsync_tui.vcs.checkout import is_temp_name

    if is_temp_name(name):
        return "names like it are ocsync's temp files, which the scanner never sees"
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        return "it is not valid UTF-8"
    aliases = _disk_aliases(text)
    if _aliases_match(_GIT, aliases):
        return "a disk may read it as '.git', git's own directory"
    if mode == SYMLINK_MODE and _aliases_match(_GITMODULES, aliases):
        return "a symbolic link named '.gitmodules' is refused by git"
    if top_level and _aliases_match(_MARKER, aliases):
        return f"{FOLDER_MARKER!r} is the folder marker, which is never synced"
    return None


def validate_tree_path(path: bytes, mode: int = REGULAR_FILE_MODE) -> str:
    """Return `path` as text if a file with `mode` may be written there; raise UnsafePathError if not."""
    if path.startswith(b"/"):
        raise UnsafePathError(f"refusing path {_shown(path)}: it is absolute")
    if len(path) > PATH_MAX_BYTES:
        raise UnsafePathError(f"refusing path {_shown(path[:60])}…: {_TOO_LONG}")
    components = path.split(b"/")
    if len(components) > DEFAULT_MAX_TREE_DEPTH:
        raise UnsafePathError(f"refusing path {_shown(path[:60])}…: {_TOO_DEEP}")
    for index, component in enumerate(components):
        component_mode = mode if index == len(components) - 1 else DIRECTORY_MODE
        reason = _refusal(component, top_level=index == 0, mode=component_mode)
        if reason:
            raise UnsafePathError(f"refusing path {_shown(path)}: {reason}")
    return path.decode("utf-8")


def _tree_entries(object_store: BaseObjectStore, tree_id: bytes, where: bytes) -> list[tuple[bytes, int, bytes]]:
    """The entries of the tree at `where` (b"" for the root), refused unless git would accept them."""
    shown = _shown(where.rstrip(b"/") or b".")
    try:
        type_num, raw = object_store.get_raw(tree_id)
    except KeyError:
        raise UnsafePathError(f"refusing tree at {shown}: object {tree_id.decode()} is missing") from None
    except ObjectFormatException:
        raise UnsafePathError(f"refusing tree at {shown}: it is malformed") from None
    if type_num != _TREE_OBJECT_TYPE:
        raise UnsafePathError(f"refusing tree at {shown}: object {tree_id.decode()} is not a tree")
    try:
        entries = list(parse_tree(raw, sha_len=20, strict=True))
    except (ObjectFormatException, ValueError):
        raise UnsafePathError(f"refusing tree at {shown}: it is malformed") from None
    names = list(map(itemgetter(0), entries))
    keys = [name + b"/" if mode == DIRECTORY_MODE else name for name, mode, _ in entries]
    if not all(map(lt, keys, keys[1:])):
        raise UnsafePathError(f"refusing tree at {shown}: entries unsorted or duplicated")
    if len(set(names)) != len(names):
        # A file and a directory of one name sort apart, but a disk holds only one of them.
        raise UnsafePathError(f"refusing tree at {shown}: two entries share a name")
    return entries


class ValidatedTrees:
    """Trees and tree entries validate_tree found valid, each with the place it was checked at.

    The checks of a tree's entries depend on its place only through the limits on depth and path length
    and through the names refused at the top alone, so a tree valid at one place is valid at any place
    no deeper and with no longer a path to it, a root only as a root. Across the many commits of a
    bundle, which share most subtrees at the same places, each tree is then read and checked once.

    A new version of a tree differs from the last in an entry or two: an entry (name, mode, id) found
    valid at a place (depth and length of the path to its tree) is valid there again, its subtree
    included, so only the changed entries of a tree are checked.
    """

    def __init__(self) -> None:
        self._places: dict[bytes, tuple[int, int]] = {}
        self._entries_at: dict[tuple[int, int], set[tuple[bytes, int, bytes]]] = {}

    def covers(self, tree_id: bytes, depth: int, prefix_length: int) -> bool:
        place = self._places.get(tree_id)
        if place is None:
            return False
        checked_depth, checked_prefix_length = place
        same_kind = (depth == 0) == (checked_depth == 0)
        return same_kind and depth <= checked_depth and prefix_length <= checked_prefix_length

    def entries_at(self, depth: int, prefix_length: int) -> set[tuple[bytes, int, bytes]]:
        return self._entries_at.get((depth, prefix_length), set())

    def record(self, tree_id: bytes, depth: int, prefix_length: int, entries: list[tuple[bytes, int, bytes]]) -> None:
        self._places[tree_id] = (depth, prefix_length)
        self._entries_at.setdefault((depth, prefix_length), set()).update(entries)


def validate_tree(
    object_store: BaseObjectStore, tree_id: bytes, *, known_valid: ValidatedTrees | None = None
) -> None:
    """Raise UnsafePathError unless every entry below `tree_id` may be written to a synced folder.

    With `known_valid`, trees it covers at their place here are not read again, and once the whole tree
    is found valid every tree read is recorded into it.
    """
    checked: list[tuple[bytes, int, int, list[tuple[bytes, int, bytes]]]] = []
    pending = [(tree_id, b"", 0)]
    while pending:
        current_id, prefix, depth = pending.pop()
        if known_valid is not None and known_valid.covers(current_id, depth, len(prefix)):
            continue
        if depth >= DEFAULT_MAX_TREE_DEPTH:
            # dulwich's tree walks stop there with their own exception; refuse first, with ours.
            raise UnsafePathError(f"refusing path {_shown(prefix[:60])}…: {_TOO_DEEP}")
        entries = _tree_entries(object_store, current_id, prefix)
        checked.append((current_id, depth, len(prefix), entries))
        valid_here = known_valid.entries_at(depth, len(prefix)) if known_valid is not None else set()
        # Set difference in C: a tree version differs from the last one checked here in an entry or two.
        for name, mode, sha in sorted(set(entries).difference(valid_here)):
            path = prefix + name
            if len(path) > PATH_MAX_BYTES:
                raise UnsafePathError(f"refusing path {_shown(path[:60])}…: {_TOO_LONG}")
            if mode == SUBMODULE_MODE:
                raise UnsafePathError(f"refusing path {_shown(path)}: submodules (mode 160000) are not synced")
            if mode not in FILE_MODES and mode != DIRECTORY_MODE:
                raise UnsafePathError(f"refusing path {_shown(path)}: unsupported mode {mode:o}")
            reason = _refusal(name, top_level=not prefix, mode=mode)
            if reason:
                raise UnsafePathError(f"refusing path {_shown(path)}: {reason}")
            if mode == DIRECTORY_MODE:
                pending.append((sha, path + b"/", depth + 1))
    if known_valid is not None:
        for place in checked:
            known_valid.record(*place)


def collision_key(path: str) -> str:
    """Equal for two paths that a case-insensitive or Unicode-normalising disk would store as one.

    Unicode canonical caseless matching (decompose, fold, compose). It folds more than any one disk does
    (e.g. 'ß' and 'ss'), which only ever means an extra conflict copy, never a lost file.
    """
    return unicodedata.normalize("NFC", unicodedata.normalize("NFD", path).casefold())
