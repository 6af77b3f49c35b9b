"""HOME/control.token: created private and once, refused when others can read it or it is damaged."""

import os
import stat

import pytest

from ocsync_tui.engine.control import ControlTokenError, ensure_token, read_token


def test_the_token_is_created_private_and_then_kept(tmp_path) -> None:
    old_umask = os.umask(0o022)
    try:
        token = ensure_token(tmp_path)
    finally:
        os.umask(old_umask)
    path = tmp_path / "control.token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(token) == 64 and int(token, 16) >= 0
    assert ensure_token(tmp_path) == token == read_token(tmp_path)
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["control.token"]


def test_two_homes_get_different_tokens(tmp_path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert ensure_token(tmp_path / "a") != ensure_token(tmp_path / "b")


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_a_token_others_can_read_is_refused_with_the_fix(tmp_path, mode) -> None:
    ensure_token(tmp_path)
    path = tmp_path / "control.token"
    path.chmod(mode)
    with pytest.raises(ControlTokenError) as refused:
        ensure_token(tmp_path)
    assert str(refused.value) == (
        f"{path} is readable by other users (mode {mode:04o}); the control token must be private: chmod 600 {path}"
    )
    with pytest.raises(ControlTokenError):
        read_token(tmp_path)


@pytest.mark.parametrize("content", ["", "short", "zz" * 32])
def test_a_damaged_token_is_refused(tmp_path, content) -> None:
    path = tmp_path / "control.token"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(ControlTokenError, match="is damaged"):
        ensure_token(tmp_path)


def test_a_directory_in_the_tokens_place_is_refused(tmp_path) -> None:
    (tmp_path / "control.token").mkdir(mode=0o700)
    with pytest.raises(ControlTokenError):
        ensure_token(tmp_path)


def test_a_missing_token_is_named_when_read(tmp_path) -> None:
    with pytest.raises(ControlTokenError, match="control.token is missing; the daemon creates it when it starts"):
        read_token(tmp_path)


def test_a_missing_home_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ControlTokenError, match="cannot create"):
        ensure_token(tmp_path / "absent")


def test_a_fifo_in_the_tokens_place_is_refused_without_hanging(tmp_path) -> None:
    os.mkfifo(tmp_path / "control.token", 0o600)
    with pytest.raises(ControlTokenError, match="is not a regular file"):
        ensure_token(tmp_path)
