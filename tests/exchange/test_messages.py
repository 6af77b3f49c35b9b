"""The exchange message codec: exact JSON fields, and any bytes decode to a message or raise MessageError."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocsync_tui.engine import messages
from ocsync_tui.engine.messages import (
    Applied,
    BundleMeta,
    Changed,
    MessageError,
    Pull,
    Refused,
    ShareOffer,
    Unshare,
    UpToDate,
    decode,
    decode_bundle_meta,
    encode,
    encode_bundle_meta,
)
from ocsync_tui.vcs.folder import new_folder_id

FOLDER = "abcd-efgh-ijkl-mn23"
HEAD = "0123456789abcdef0123456789abcdef01234567"
OTHER = "f" * 40

SAMPLES = [
    Changed(FOLDER, HEAD),
    Pull(FOLDER, 7, (HEAD, OTHER)),
    Pull(FOLDER, 0, ()),
    UpToDate(FOLDER, 2**63 - 1, HEAD),
    UpToDate(FOLDER, 3, None),
    Refused(FOLDER, 3, "folder not shared with you"),
    Applied(FOLDER, OTHER),
    ShareOffer(FOLDER, "Photos ünïcode"),
    Unshare(FOLDER),
]


@pytest.mark.parametrize("message", SAMPLES, ids=lambda message: type(message).__name__)
def test_round_trip(message):
    data = encode(message)
    document = json.loads(data)
    assert document["v"] == 1 and document["folder"] == FOLDER
    assert decode(data) == message


def test_wire_form_is_the_documented_json():
    assert json.loads(encode(Pull(FOLDER, 7, (HEAD,)))) == {
        "v": 1, "type": "pull", "folder": FOLDER, "request": 7, "haves": [HEAD]
    }
    assert json.loads(encode(ShareOffer(FOLDER, "Docs"))) == {
        "v": 1, "type": "share-offer", "folder": FOLDER, "name": "Docs"
    }
    assert json.loads(encode_bundle_meta(BundleMeta(FOLDER, 9, HEAD))) == {
        "v": 1, "folder": FOLDER, "request": 9, "head": HEAD
    }


def test_generated_folder_ids_are_accepted():
    for _ in range(50):
        folder_id = new_folder_id()
        assert decode(encode(Unshare(folder_id))) == Unshare(folder_id)


def test_bundle_meta_round_trip():
    meta = BundleMeta(FOLDER, 12, HEAD)
    assert decode_bundle_meta(encode_bundle_meta(meta)) == meta


def _json(**fields) -> bytes:
    return json.dumps(fields).encode()


@pytest.mark.parametrize(
    "data, complaint",
    [
        (b"", "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[1]", "not a JSON object"),
        (b"[" * 5000 + b"]" * 5000, "longer than"),
        (b"[" * 4000, "not JSON"),
        (_json(type="changed", folder=FOLDER, head=HEAD), "not version 1"),
        (_json(v=2, type="changed", folder=FOLDER, head=HEAD), "not version 1"),
        (_json(v=True, type="changed", folder=FOLDER, head=HEAD), "not version 1"),
        (_json(v=1, type="hello"), "unknown message type 'hello'"),
        (_json(v=1, type="changed", folder=FOLDER), "missing field 'head'"),
        (_json(v=1, type="changed", folder=FOLDER, head=HEAD, extra=1), "unexpected field 'extra'"),
        (_json(v=1, type="changed", folder="ABCD-EFGH-IJKL-MNOP", head=HEAD), "folder ID"),
        (_json(v=1, type="changed", folder="../../etc", head=HEAD), "folder ID"),
        (_json(v=1, type="changed", folder=FOLDER, head=HEAD.upper()), "40 lowercase hex"),
        (_json(v=1, type="changed", folder=FOLDER, head=HEAD[:39]), "40 lowercase hex"),
        (_json(v=1, type="changed", folder=FOLDER, head=None), "40 lowercase hex"),
        (_json(v=1, type="pull", folder=FOLDER, request=-1, haves=[]), "request id"),
        (_json(v=1, type="pull", folder=FOLDER, request=True, haves=[]), "request id"),
        (_json(v=1, type="pull", folder=FOLDER, request=2**63, haves=[]), "request id"),
        (_json(v=1, type="pull", folder=FOLDER, request=1.0, haves=[]), "request id"),
        (_json(v=1, type="pull", folder=FOLDER, request=1, haves=[HEAD] * 65), "at most 64"),
        (_json(v=1, type="pull", folder=FOLDER, request=1, haves=HEAD), "at most 64"),
        (_json(v=1, type="refused", folder=FOLDER, request=1, reason="x" * 201), "refusal reason"),
        (_json(v=1, type="refused", folder=FOLDER, request=1, reason="two\nlines"), "refusal reason"),
        (_json(v=1, type="share-offer", folder=FOLDER, name=""), "folder name"),
        (_json(v=1, type="share-offer", folder=FOLDER, name="n" * 65), "folder name"),
        (_json(v=1, type="share-offer", folder=FOLDER, name=" Docs"), "folder name"),
        (b'{"v":1,"v":1,"type":"unshare","folder":"abcd-efgh-ijkl-mn23"}', "twice"),
        (b'{"v":NaN,"type":"unshare","folder":"abcd-efgh-ijkl-mn23"}', "not a JSON number"),
    ],
)
def test_malformed_messages_get_a_clear_error(data, complaint):
    with pytest.raises(MessageError, match=complaint) as raised:
        decode(data)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    "name, complaint",
    [
        ("", "not JSON"),
        (json.dumps({"v": 1, "folder": FOLDER, "request": 1}), "missing field 'head'"),
        (json.dumps({"v": 1, "type": "pull", "folder": FOLDER, "request": 1, "head": HEAD}), "unexpected field"),
        (json.dumps({"v": 1, "folder": FOLDER, "request": 1, "head": None}), "40 lowercase hex"),
        ("\udcff", "not UTF-8"),
    ],
)
def test_malformed_bundle_meta_gets_a_clear_error(name, complaint):
    with pytest.raises(MessageError, match=complaint):
        decode_bundle_meta(name)


def test_encoding_an_invalid_message_is_refused():
    with pytest.raises(MessageError):
        encode(Pull(FOLDER, 1, (HEAD,) * 65))
    with pytest.raises(MessageError):
        encode(Changed("not an id", HEAD))


folder_ids = st.lists(st.sampled_from("abcdefghijklmnopqrstuvwxyz234567"), min_size=16, max_size=16).map(
    lambda letters: "-".join("".join(letters[i : i + 4]) for i in range(0, 16, 4))
)
commit_ids = st.binary(min_size=20, max_size=20).map(bytes.hex)
request_ids = st.integers(0, messages.MAX_REQUEST_ID)
texts = st.text(st.characters(blacklist_categories=("Cc",)), min_size=1, max_size=64).filter(
    lambda text: text == text.strip() and not messages._CONTROL_CHARACTERS.search(text)
)
any_message = st.one_of(
    st.builds(Changed, folder_ids, commit_ids),
    st.builds(Pull, folder_ids, request_ids, st.lists(commit_ids, max_size=64).map(tuple)),
    st.builds(UpToDate, folder_ids, request_ids, st.none() | commit_ids),
    st.builds(Refused, folder_ids, request_ids, texts),
    st.builds(Applied, folder_ids, commit_ids),
    st.builds(ShareOffer, folder_ids, texts),
    st.builds(Unshare, folder_ids),
)


@settings(max_examples=300, deadline=None)
@given(any_message)
def test_every_valid_message_round_trips(message):
    assert decode(encode(message)) == message


def _decodes_or_refuses(data: bytes) -> None:
    try:
        message = decode(data)
    except MessageError as error:
        assert "\n" not in str(error)
        return
    assert decode(encode(message)) == message


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_decode_or_raise_message_error(data):
    _decodes_or_refuses(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50) | commit_ids | folder_ids,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(any_message, st.sampled_from(["v", "type", "folder", "request", "haves", "head", "reason", "name", "x"]),
       json_values)
def test_any_field_value_decodes_or_raises_message_error(message, key, value):
    """Near misses of valid messages: one field replaced (or added) with an arbitrary JSON value."""
    document = json.loads(encode(message))
    document[key] = value
    _decodes_or_refuses(json.dumps(document).encode())


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_bundle_name_decodes_or_raises_message_error(name):
    try:
        meta = decode_bundle_meta(name)
    except MessageError:
        return
    assert decode_bundle_meta(encode_bundle_meta(meta)) == meta
