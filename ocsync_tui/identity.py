"""A device's identity: its Ed25519 key, its name, and the device ID people compare.

The device ID is the base32 of the public key, split into four 13-character parts, each followed by a
Luhn mod 32 check character (as Syncthing does), shown as eight dash-separated groups of seven. A
single mistyped character or a swap of two neighbours is caught by the check characters.
"""

import base64
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import nacl.exceptions
import nacl.signing

from ocsync_tui.errors import OcsyncError
from ocsync_tui.private_files import private_file_problem

KEY_FILE = "device.key"
NAME_FILE = "device.json"
_KEY_HEADER = "ocsync-ed25519-seed-v1"
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_PART = 13


class IdentityError(OcsyncError):
    pass


class DeviceIdError(OcsyncError):
    pass


def _luhn32(part: str) -> str:
    factor, total = 1, 0
    for char in reversed(part):
        addend = factor * _ALPHABET.index(char)
        total += addend // 32 + addend % 32
        factor = 2 if factor == 1 else 1
    return _ALPHABET[(32 - total % 32) % 32]


def format_device_id(public_key: bytes) -> str:
    if len(public_key) != 32:
        raise ValueError("a device public key is 32 bytes")
    encoded = base64.b32encode(public_key).decode("ascii").rstrip("=")
    with_checks = "".join(
        encoded[i : i + _PART] + _luhn32(encoded[i : i + _PART]) for i in range(0, len(encoded), _PART)
    )
    return "-".join(with_checks[i : i + 7] for i in range(0, len(with_checks), 7))


def parse_device_id(text: str) -> bytes:
    """Return the public key a device ID names, or raise DeviceIdError saying what is wrong."""
    compact = text.strip().upper().replace("-", "").replace(" ", "")
    if len(compact) != 56:
        raise DeviceIdError(f"a device ID has 56 characters (8 groups of 7); got {len(compact)} in {text!r}")
    bad = sorted({c for c in compact if c not in _ALPHABET})
    if bad:
        raise DeviceIdError(f"a device ID uses only A-Z and 2-7; {text!r} contains {''.join(bad)!r}")
    parts = [compact[i : i + _PART + 1] for i in range(0, 56, _PART + 1)]
    for index, part in enumerate(parts, start=1):
        if _luhn32(part[:-1]) != part[-1]:
            raise DeviceIdError(f"device ID {text!r} fails its check in part {index} of 4: is it mistyped?")
    encoded = "".join(part[:-1] for part in parts)
    return base64.b32decode(encoded + "====")


def short_device_id(device_id: str) -> str:
    """The first seven characters, as used in conflict-copy names."""
    return device_id.replace("-", "")[:7]


@dataclass(frozen=True)
class DeviceIdentity:
    signing_key: nacl.signing.SigningKey
    name: str

    @property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def device_id(self) -> str:
        return format_device_id(self.public_key)

    @property
    def git_identity(self) -> bytes:
        """Author/committer for this device's commits; a bare name would fail `git fsck --strict`."""
        safe_name = "".join(c for c in self.name if c not in "<>\n\0").strip() or "ocsync device"
        return f"{safe_name} <{self.device_id}@ocsync.invalid>".encode("utf-8")


def _check_private(path: Path) -> None:
    problem = private_file_problem(path, path.stat().st_mode, "the device key")
    if problem is not None:
        raise IdentityError(problem)


def _read_key(path: Path) -> nacl.signing.SigningKey:
    _check_private(path)
    lines = path.read_text(encoding="ascii", errors="replace").split()
    if len(lines) != 2 or lines[0] != _KEY_HEADER:
        raise IdentityError(f"{path} is damaged: it is not an ocsync device key")
    try:
        seed = base64.b64decode(lines[1], validate=True)
        return nacl.signing.SigningKey(seed)
    except (ValueError, nacl.exceptions.CryptoError, TypeError):
        raise IdentityError(f"{path} is damaged: its key does not decode to a 32-byte Ed25519 seed") from None


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _read_name(path: Path) -> str:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        name = data["name"]
    except (OSError, ValueError, KeyError, TypeError):
        raise IdentityError(f"{path} is damaged: expected JSON with a \"name\" field") from None
    if not isinstance(name, str) or not name.strip():
        raise IdentityError(f"{path} is damaged: the device name must be a non-empty string")
    return name


def load_identity(home: Path) -> DeviceIdentity:
    """Load this home's identity; raise IdentityError if there is none or it is damaged."""
    key_path = home / KEY_FILE
    if not key_path.exists():
        raise IdentityError(f"no device key in {home}; run `ocsync id` to create one")
    name_path = home / NAME_FILE
    name = _read_name(name_path) if name_path.exists() else socket.gethostname()
    return DeviceIdentity(_read_key(key_path), name)


def load_or_create_identity(home: Path) -> DeviceIdentity:
    if not (home / KEY_FILE).exists():
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        seed = bytes(nacl.signing.SigningKey.generate())
        _write_private(home / KEY_FILE, f"{_KEY_HEADER}\n{base64.b64encode(seed).decode('ascii')}\n")
        if not (home / NAME_FILE).exists():
            _write_private(home / NAME_FILE, json.dumps({"name": socket.gethostname()}) + "\n")
    return load_identity(home)


def rename_device(home: Path, name: str) -> DeviceIdentity:
    if not name.strip() or any(c in name for c in "<>\n\0"):
        raise IdentityError("a device name must be non-empty and may not contain <, >, newline or NUL")
    identity = load_or_create_identity(home)
    _write_private(home / NAME_FILE, json.dumps({"name": name.strip()}) + "\n")
    return DeviceIdentity(identity.signing_key, name.strip())
