"""The one-pass pack indexer on crafted packs, checked against git's own index-pack."""

import io
import random
import subprocess
import zlib
from hashlib import sha1
from pathlib import Path

import pytest
from dulwich.objects import Blob, object_header
from dulwich.pack import REF_DELTA, create_delta, pack_header_chunks, pack_object_header
from dulwich.object_format import SHA1

from ocsync_tui.vcs.pack_indexer import PackIndexError, TruncatedPack, index_pack


def blob_id(raw: bytes) -> bytes:
    return sha1(object_header(Blob.type_num, len(raw)) + raw).digest()


def whole(raw: bytes, level: int = 6) -> bytes:
    return bytes(pack_object_header(Blob.type_num, None, len(raw), SHA1)) + zlib.compress(raw, level)


def ref_delta(base: bytes, target: bytes) -> bytes:
    delta = b"".join(create_delta(base, target))
    return bytes(pack_object_header(REF_DELTA, blob_id(base), len(delta), SHA1)) + zlib.compress(delta)


def pack_of(*entries: bytes) -> bytes:
    body = b"".join(pack_header_chunks(len(entries))) + b"".join(entries)
    return body + sha1(body).digest()


def index(tmp_path: Path, data: bytes, outside: dict[bytes, bytes] | None = None):
    def resolve_outside(sha: bytes):
        if outside is None or sha not in outside:
            raise KeyError(sha)
        return Blob.type_num, outside[sha]

    with open(tmp_path / "out.pack", "w+b", buffering=0) as pack_file:
        return index_pack(io.BytesIO(data).read, pack_file, resolve_outside)


def git_ids(tmp_path: Path, data: bytes) -> set[bytes]:
    """The ids git's index-pack finds in the pack."""
    (tmp_path / "git.pack").write_bytes(data)
    subprocess.run(["git", "index-pack", str(tmp_path / "git.pack")], check=True, capture_output=True)
    listing = subprocess.run(["git", "verify-pack", "-v", str(tmp_path / "git.idx")], capture_output=True, text=True).stdout
    return {bytes.fromhex(line.split()[0]) for line in listing.splitlines() if line[:40].isalnum() and " blob " in line}


def test_a_delta_whose_base_comes_later_is_resolved_at_the_end(tmp_path: Path) -> None:
    rng = random.Random(1)
    base = rng.randbytes(5000)
    target = base[:2000] + b"changed" + base[2000:]
    data = pack_of(ref_delta(base, target), whole(base))

    indexed = index(tmp_path, data)

    assert {sha for sha, _, _ in indexed.entries} == {blob_id(base), blob_id(target)} == git_ids(tmp_path, data)
    assert indexed.checksum == data[-20:] and indexed.outside_bases == set()
    assert (tmp_path / "out.pack").read_bytes() == data


def test_a_thin_delta_takes_its_base_from_outside(tmp_path: Path) -> None:
    base = b"line\n" * 500
    target = base + b"one more line\n"
    indexed = index(tmp_path, pack_of(ref_delta(base, target)), outside={blob_id(base): base})
    assert [sha for sha, _, _ in indexed.entries] == [blob_id(target)]
    assert indexed.outside_bases == {blob_id(base)}


def test_deltas_based_on_each_other_are_refused(tmp_path: Path) -> None:
    first, second = b"a" * 100, b"b" * 100
    with pytest.raises(PackIndexError, match="base neither the pack nor this folder has"):
        index(tmp_path, pack_of(ref_delta(first, second), ref_delta(second, first)))


def test_a_large_object_is_hashed_as_it_inflates(tmp_path: Path) -> None:
    large = random.Random(2).randbytes(3_500_000)
    data = pack_of(whole(large, level=0), whole(b"small"))
    indexed = index(tmp_path, data)
    assert [sha for sha, _, _ in indexed.entries] == [blob_id(large), blob_id(b"small")]
    assert {sha for sha, _, _ in indexed.entries} == git_ids(tmp_path, data)


@pytest.mark.parametrize("declared", [10, 2000])
def test_an_entry_that_inflates_to_another_size_is_refused(tmp_path: Path, declared: int) -> None:
    raw = b"x" * 1000
    entry = bytes(pack_object_header(Blob.type_num, None, declared, SHA1)) + zlib.compress(raw)
    with pytest.raises(PackIndexError, match="inflates to"):
        index(tmp_path, pack_of(entry))


def test_truncation_trailing_data_and_a_bad_checksum_are_refused(tmp_path: Path) -> None:
    data = pack_of(whole(b"one"), whole(b"two"))
    with pytest.raises(TruncatedPack):
        index(tmp_path, data[:-25])
    with pytest.raises(PackIndexError, match="data follows"):
        index(tmp_path, data + b"x")
    with pytest.raises(PackIndexError, match="checksum"):
        index(tmp_path, data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(PackIndexError, match="twice"):
        index(tmp_path, pack_of(whole(b"one"), whole(b"one", level=1)))
