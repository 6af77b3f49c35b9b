"""The exchange's messages between two peers, and the metadata of a bundle blob: JSON, version 1.

Each message is one small blob (`kind="ocsync/msg"`), a JSON object with `"v": 1`, a `"type"` and the
type's fields, nothing else:

    {"v": 1, "type": "changed",    "folder": ID, "head": HEX}
    {"v": 1, "type": "pull",       "folder": ID, "request": N, "haves": [HEX, ...]}   (at most 64)
    {"v": 1, "type": "up-to-date", "folder": ID, "request": N, "head": HEX or null}
    {"v": 1, "type": "refused",    "folder": ID, "request": N, "reason": TEXT}
    {"v": 1, "type": "applied",    "folder": ID, "head": HEX}
    {"v": 1, "type": "share-offer","folder": ID, "name": TEXT}
    {"v": 1, "type": "unshare",    "folder": ID}

A bundle blob (`kind="ocsync/bundle"`) carries `{"v": 1, "folder": ID, "request": N, "head": HEX}` as
its name. IDs are folder IDs as `new_folder_id` makes them, HEX a 40-digit lowercase commit id, N a
request id (an integer in 0 .. 2**63-1), TEXT at most 200 characters without control characters or
blanks around it (a folder name at most 64). `up-to-date` has a null head when the giver has no commit yet.

Decoding takes bytes from a peer: whatever they are, the result is a message or a MessageError with a
one-line reason. Fields are checked exactly (unknown fields, unknown types and other versions are
refused), so a decoded message needs no further validation and encodes back to the same message.
"""

import json
import re
from dataclasses import dataclass
from typing import Any

from ocsync_tui.errors import OcsyncError
from ocsync_tui.vcs.negotiation import MAX_HAVES

VERSION = 1
MAX_MESSAGE_BYTES = 8 * 1024
MAX_REASON_CHARS = 200
MAX_FOLDER_NAME_CHARS = 64
MAX_REQUEST_ID = 2**63 - 1

_FOLDER_ID = re.compile(r"[a-z2-7]{4}(?:-[a-z2-7]{4}){3}")
_COMMIT_ID = re.compile(r"[0-9a-f]{40}")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class MessageError(OcsyncError):
    """Bytes from a peer that are not a valid exchange message (or bundle metadata)."""


@dataclass(frozen=True, slots=True)
class Changed:
    """The sender's head of the folder moved."""

    folder_id: str
    head: str


@dataclass(frozen=True, slots=True)
class Pull:
    """The sender asks for what it lacks of the folder; `haves` are commits it has, newest first."""

    folder_id: str
    request_id: int
    haves: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UpToDate:
    """Answer to a Pull: the asker already has the giver's head (None: the giver has no commit)."""

    folder_id: str
    request_id: int
    head: str | None


@dataclass(frozen=True, slots=True)
class Refused:
    """Answer to a Pull the giver will not serve (folder not shared with the asker, unknown, stopped)."""

    folder_id: str
    request_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class Applied:
    """The puller applied the giver's bundle; `head` is the puller's new head."""

    folder_id: str
    head: str


@dataclass(frozen=True, slots=True)
class ShareOffer:
    """The sender shares a folder with the receiver (the seed's Send); the receiver may accept it."""

    folder_id: str
    folder_name: str


@dataclass(frozen=True, slots=True)
class Unshare:
    """The sender no longer shares the folder with the receiver."""

    folder_id: str


@dataclass(frozen=True, slots=True)
class BundleMeta:
    """What a bundle blob is: the answer to `request_id` for the folder, with the giver's head."""

    folder_id: str
    request_id: int
    head: str


Message = Changed | Pull | UpToDate | Refused | Applied | ShareOffer | Unshare

# type name → (class, {json key: (attribute, checker)}); one table drives both directions.
_FOLDER = ("folder", "folder_id")
_REQUEST = ("request", "request_id")
_TYPES: dict[str, tuple[type, tuple[tuple[str, str], ...]]] = {
    "changed": (Changed, (_FOLDER, ("head", "head"))),
    "pull": (Pull, (_FOLDER, _REQUEST, ("haves", "haves"))),
    "up-to-date": (UpToDate, (_FOLDER, _REQUEST, ("head", "head"))),
    "refused": (Refused, (_FOLDER, _REQUEST, ("reason", "reason"))),
    "applied": (Applied, (_FOLDER, ("head", "head"))),
    "share-offer": (ShareOffer, (_FOLDER, ("name", "folder_name"))),
    "unshare": (Unshare, (_FOLDER,)),
}
_TYPE_OF_CLASS = {cls: name for name, (cls, _) in _TYPES.items()}
_BUNDLE_FIELDS = (_FOLDER, _REQUEST, ("head", "head"))


def is_folder_id(value: object) -> bool:
    return isinstance(value, str) and _FOLDER_ID.fullmatch(value) is not None


def is_commit_id(value: object) -> bool:
    return isinstance(value, str) and _COMMIT_ID.fullmatch(value) is not None


def _check_folder_id(value: object) -> str:
    if not is_folder_id(value):
        raise MessageError("the folder ID is not four groups of four base32 letters")
    return value  # type: ignore[return-value]


def _check_commit_id(value: object) -> str:
    if not is_commit_id(value):
        raise MessageError("a commit id is not 40 lowercase hex digits")
    return value  # type: ignore[return-value]


def _check_request_id(value: object) -> int:
    # bool is an int in Python; true is not a request id.
    if type(value) is not int or not 0 <= value <= MAX_REQUEST_ID:
        raise MessageError(f"the request id is not an integer from 0 to {MAX_REQUEST_ID}")
    return value


def _check_text(value: object, limit: int, what: str) -> str:
    # As the store's names: no blanks around, so an offered name can be stored and typed as shown.
    if (
        not isinstance(value, str)
        or not value
        or len(value) > limit
        or value != value.strip()
        or _CONTROL_CHARACTERS.search(value)
    ):
        raise MessageError(f"the {what} is not 1 to {limit} characters without control characters or blanks around")
    return value


def _check_haves(value: object) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or len(value) > MAX_HAVES:
        raise MessageError(f"haves is not a list of at most {MAX_HAVES} commit ids")
    return tuple(_check_commit_id(item) for item in value)


def _check_field(message_type: str, attribute: str, value: object) -> Any:
    if attribute == "folder_id":
        return _check_folder_id(value)
    if attribute == "request_id":
        return _check_request_id(value)
    if attribute == "haves":
        return _check_haves(value)
    if attribute == "head":
        return None if value is None and message_type == "up-to-date" else _check_commit_id(value)
    if attribute == "reason":
        return _check_text(value, MAX_REASON_CHARS, "refusal reason")
    return _check_text(value, MAX_FOLDER_NAME_CHARS, "folder name")


def _to_json(obj: object, message_type: str, fields: tuple[tuple[str, str], ...]) -> bytes:
    document: dict[str, Any] = {"v": VERSION}
    if message_type:
        document["type"] = message_type
    for key, attribute in fields:
        value = _check_field(message_type, attribute, getattr(obj, attribute))
        document[key] = list(value) if isinstance(value, tuple) else value
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def encode(message: Message) -> bytes:
    """The message as bytes; a message with an invalid field raises MessageError (a bug of ours)."""
    message_type = _TYPE_OF_CLASS.get(type(message))
    if message_type is None:
        raise MessageError(f"{type(message).__name__} is not an exchange message")
    return _to_json(message, message_type, _TYPES[message_type][1])


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        raise MessageError("a field appears twice")
    return document


def _refuse_constant(name: str) -> None:
    raise MessageError(f"{name} is not a JSON number")


def _parse(data: bytes | bytearray | memoryview, what: str) -> dict[str, Any]:
    if len(data) > MAX_MESSAGE_BYTES:
        raise MessageError(f"the {what} is longer than {MAX_MESSAGE_BYTES} bytes")
    try:
        document = json.loads(
            bytes(data).decode("utf-8"), object_pairs_hook=_refuse_duplicates, parse_constant=_refuse_constant
        )
    except UnicodeDecodeError:
        raise MessageError(f"the {what} is not UTF-8") from None
    except (ValueError, RecursionError):
        raise MessageError(f"the {what} is not JSON") from None
    if not isinstance(document, dict):
        raise MessageError(f"the {what} is not a JSON object")
    version = document.get("v")
    if type(version) is not int or version != VERSION:
        raise MessageError(f"the {what} is not version {VERSION} (v={version!r:.20})")
    return document


def _fields_of(document: dict[str, Any], message_type: str, fields: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    expected = {"v", *(key for key, _ in fields)} | ({"type"} if message_type else set())
    if document.keys() != expected:
        unexpected = sorted(document.keys() - expected)
        missing = sorted(expected - document.keys())
        detail = f"unexpected field {unexpected[0]!r:.40}" if unexpected else f"missing field {missing[0]!r}"
        raise MessageError(f"{message_type or 'bundle metadata'}: {detail}")
    return {attribute: _check_field(message_type, attribute, document[key]) for key, attribute in fields}


def decode(data: bytes | bytearray | memoryview) -> Message:
    """The message in `data`, or MessageError (never another exception) saying what is wrong with it."""
    document = _parse(data, "message")
    message_type = document.get("type")
    if not isinstance(message_type, str) or message_type not in _TYPES:
        raise MessageError(f"unknown message type {message_type!r:.40}")
    cls, fields = _TYPES[message_type]
    return cls(**_fields_of(document, message_type, fields))


def encode_bundle_meta(meta: BundleMeta) -> str:
    """The name to give a bundle blob."""
    return _to_json(meta, "", _BUNDLE_FIELDS).decode("utf-8")


def decode_bundle_meta(name: str) -> BundleMeta:
    """The metadata a bundle blob's name carries, or MessageError."""
    if not isinstance(name, str):
        raise MessageError("the bundle metadata is not text")
    try:
        data = name.encode("utf-8")
    except UnicodeEncodeError:
        raise MessageError("the bundle metadata is not UTF-8") from None
    return BundleMeta(**_fields_of(_parse(data, "bundle metadata"), "", _BUNDLE_FIELDS))
