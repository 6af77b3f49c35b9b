"""A receiving endpoint in its own process, for tests that kill it (SIGKILL) and start it again.

    python -m tests.engine.blob_receiver STATE_DIR PORT SEED_HEX GIVER_KEY_HEX GIVER_HOST GIVER_PORT

It connects to the giver at once (so after a restart the giver learns of the new session), accepts
every offer, and prints one JSON line per event: {"address": [host, port]} when serving, then
{"progress": bytes_done}, {"completed": path} or {"failed": reason}.
"""

import json
import sys
from pathlib import Path

import nacl.signing
import trio

from ocsync_tui.net.endpoint import Endpoint
from ocsync_tui.net.events import TransferCompleted, TransferFailed, TransferOffered, TransferProgress


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def main(state_dir: str, port: str, seed_hex: str, giver_key_hex: str, giver_host: str, giver_port: str) -> None:
    endpoint = Endpoint(
        nacl.signing.SigningKey(bytes.fromhex(seed_hex)), state_dir=Path(state_dir), host="127.0.0.1", port=int(port)
    )
    giver = bytes.fromhex(giver_key_hex)
    endpoint.add_peer(giver, (giver_host, int(giver_port)))
    async with trio.open_nursery() as nursery:
        address = await nursery.start(endpoint.run)
        endpoint.connect(giver)
        say(address=list(address))
        async for event in endpoint.events:
            if isinstance(event, TransferOffered):
                endpoint.accept(event.public_key, event.transfer_id)
            elif isinstance(event, TransferProgress):
                say(progress=event.bytes_done)
            elif isinstance(event, TransferCompleted):
                say(completed=str(event.path))
            elif isinstance(event, TransferFailed):
                say(failed=event.reason)


if __name__ == "__main__":
    trio.run(main, *sys.argv[1:])
