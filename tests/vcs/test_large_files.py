"""A large file goes to a peer without ever being held whole: bundle, import and checkout stream it."""

import hashlib
import random
import tracemalloc
from pathlib import Path

from tests.vcs.devices import make_device, verify_bundle

LARGE = 40_000_000
# Reading, inflating and writing go a megabyte or so at a time; the rest is bookkeeping.
PEAK_ALLOWED = 12_000_000


def test_a_large_file_is_bundled_imported_and_written_in_pieces(tmp_path: Path) -> None:
    content = random.Random(7).randbytes(LARGE)
    alice = make_device(tmp_path, "alice", {"video.bin": content, "small.txt": b"small"})
    digest = hashlib.sha256(content).hexdigest()
    del content
    bob = make_device(tmp_path, "bob")
    bundle = tmp_path / "full.bundle"

    tracemalloc.start()
    try:
        alice.bundle_for(bob, bundle)
        _, bundle_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        bob.apply(bundle, alice)
        _, apply_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    verify_bundle(bob.root, bundle)
    assert hashlib.sha256((bob.root / "video.bin").read_bytes()).hexdigest() == digest
    assert bundle_peak < PEAK_ALLOWED, f"making the bundle held {bundle_peak / 1e6:.0f} MB at once"
    assert apply_peak < PEAK_ALLOWED, f"applying it held {apply_peak / 1e6:.0f} MB at once"
