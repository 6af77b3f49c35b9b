"""Per-packet AEAD cost: `cryptography`'s ChaCha20Poly1305 against PyNaCl's binding, and our fast paths.

For each payload size (1200 B, 8 KB, 64 KB) it times encrypt+decrypt of one packet with a reused
`cryptography` ChaCha20Poly1305 object and with `nacl.bindings.crypto_aead_chacha20poly1305_ietf_*`
(the same IETF construction), then `SecureChannel.seal` and `open_transport` between two channels with
a live session. Each figure is the median over `--runs` runs of the mean over `--packets` packets.

Usage: python bench/aead.py [--runs 5] [--packets 2000]. Last line: JSON, microseconds per packet.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import nacl.bindings
import nacl.signing
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from ocsync_tui.net.secure_channel import SecureChannel

SIZES = {"1200B": 1200, "8KB": 8 * 1024, "64KB": 64 * 1024 - 100}
_NONCE_PREFIX = bytes(4)


def _per_packet_us(function, packets: int, runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        function(packets)
        samples.append((time.perf_counter() - start) / packets * 1e6)
    return round(statistics.median(samples), 2)


def cryptography_round_trip(payload: bytes):
    aead = ChaCha20Poly1305(os.urandom(32))

    def run(packets: int) -> None:
        encrypt, decrypt = aead.encrypt, aead.decrypt
        for counter in range(packets):
            nonce = _NONCE_PREFIX + counter.to_bytes(8, "little")
            decrypt(nonce, encrypt(nonce, payload, None), None)

    return run


def pynacl_round_trip(payload: bytes):
    key = os.urandom(32)
    encrypt = nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt
    decrypt = nacl.bindings.crypto_aead_chacha20poly1305_ietf_decrypt

    def run(packets: int) -> None:
        for counter in range(packets):
            nonce = _NONCE_PREFIX + counter.to_bytes(8, "little")
            decrypt(encrypt(payload, None, nonce, key), None, nonce, key)

    return run


def connected_channels() -> tuple[SecureChannel, SecureChannel, bytes, bytes]:
    alice_key, bob_key = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    alice, bob = SecureChannel(alice_key), SecureChannel(bob_key)
    alice_public, bob_public = bytes(alice_key.verify_key), bytes(bob_key.verify_key)
    alice_address, bob_address = ("127.0.0.1", 1), ("127.0.0.1", 2)
    alice.add_peer(bob_public, bob_address)
    bob.add_peer(alice_public)
    alice.connect(bob_public, 0.0)
    for _ in range(4):
        for source, destination, address in ((alice, bob, alice_address), (bob, alice, bob_address)):
            for datagram, _ in source.datagrams_to_send(0.0):
                destination.receive_datagram(datagram, address, 0.0)
    assert bob.has_session(alice_public, 0.0)
    return alice, bob, alice_public, bob_public


def seal_only(payload: bytes):
    alice, _, _, bob_public = connected_channels()

    def run(packets: int) -> None:
        seal = alice.seal
        for _ in range(packets):
            seal(bob_public, payload, 1.0)

    return run


def open_only(payload: bytes, packets: int):
    alice, bob, _, bob_public = connected_channels()
    address = ("127.0.0.1", 1)
    sealed = [alice.seal(bob_public, payload, 1.0)[0] for _ in range(packets)]

    def run(count: int) -> None:
        open_transport = bob.open_transport
        for datagram in sealed[:count]:
            open_transport(datagram, address, 1.0)

    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--packets", type=int, default=2000)
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    for name, size in SIZES.items():
        payload = os.urandom(size)
        packets = args.packets if size < 10_000 else max(args.packets // 4, 1)
        cryptography_us = _per_packet_us(cryptography_round_trip(payload), packets, args.runs)
        pynacl_us = _per_packet_us(pynacl_round_trip(payload), packets, args.runs)
        seal_us = _per_packet_us(seal_only(payload), packets, args.runs)
        # Each run needs fresh packets (a replayed one would be refused early and look cheap).
        open_samples = [_per_packet_us(open_only(payload, packets), packets, 1) for _ in range(args.runs)]
        results[name] = {
            "cryptography_round_trip_us": cryptography_us,
            "pynacl_round_trip_us": pynacl_us,
            "pynacl_over_cryptography": round(pynacl_us / cryptography_us, 2),
            "seal_us": seal_us,
            "open_us": round(statistics.median(open_samples), 2),
        }
        print(name, results[name], flush=True)
    chosen = "cryptography" if all(r["pynacl_over_cryptography"] >= 1 for r in results.values()) else "mixed"
    print(json.dumps({"benchmark": "aead", "runs": args.runs, "faster": chosen, "results": results}))


if __name__ == "__main__":
    main()
