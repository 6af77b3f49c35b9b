import os
import subprocess
import sys

import pytest
from hypothesis import given, strategies as st

from ocsync_tui.identity import (
    DeviceIdError,
    IdentityError,
    format_device_id,
    load_identity,
    load_or_create_identity,
    parse_device_id,
)


def test_identity_is_created_once_private_and_stable(home):
    first = load_or_create_identity(home)
    assert os.stat(home / "device.key").st_mode & 0o777 == 0o600
    assert load_or_create_identity(home).device_id == first.device_id
    assert first.git_identity.endswith(f"<{first.device_id}@ocsync.invalid>".encode())


def test_key_readable_by_others_is_refused(home):
    load_or_create_identity(home)
    os.chmod(home / "device.key", 0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        load_identity(home)


def test_damaged_key_is_a_clear_error(home):
    load_or_create_identity(home)
    (home / "device.key").write_text("ocsync-ed25519-seed-v1\nnot-base64!!\n")
    with pytest.raises(IdentityError, match="damaged"):
        load_identity(home)


@given(st.binary(min_size=32, max_size=32))
def test_device_id_round_trips(key):
    text = format_device_id(key)
    assert len(text) == 63 and text.count("-") == 7
    assert parse_device_id(text) == key
    assert parse_device_id(text.lower().replace("-", " ")) == key


@given(st.binary(min_size=32, max_size=32), st.integers(0, 55), st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"))
def test_any_single_typo_is_caught(key, position, replacement):
    compact = format_device_id(key).replace("-", "")
    if compact[position] == replacement:
        return
    typo = compact[:position] + replacement + compact[position + 1 :]
    with pytest.raises(DeviceIdError):
        parse_device_id(typo)


@pytest.mark.parametrize("text", ["", "ABC", "0" * 56, "A" * 57])
def test_malformed_device_ids_are_refused(text):
    with pytest.raises(DeviceIdError):
        parse_device_id(text)


def test_cli_id_prints_name_and_id(tmp_path):
    home = tmp_path / "h"
    result = subprocess.run(
        [sys.executable, "-m", "ocsync_tui", "--home", str(home), "id", "--rename", "Laptop"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Device name: Laptop" in result.stdout
    device_id = result.stdout.split("Device ID:")[1].strip()
    assert parse_device_id(device_id) == load_identity(home).public_key
