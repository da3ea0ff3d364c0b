"""Pages of a trial's output: bounded, and never a symlink or FIFO the trial planted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hbd.executor import results
from hbd.executor.logpages import MAX_LOG_PAGE_BYTES, LogUnavailable, read_log_page


def trial(tmp_path: Path, name: str = "sw-s0-r0-c0") -> Path:
    d = results.trial_dir(tmp_path, name)
    d.mkdir(parents=True)
    return d


def test_pages_are_bounded_and_follow_on_from_next_offset(tmp_path: Path) -> None:
    d = trial(tmp_path)
    data = b"0123456789" * (MAX_LOG_PAGE_BYTES // 4)
    (d / results.STDOUT_FILE).write_bytes(data)
    got, offset = b"", 0
    pages = 0
    while True:
        page = read_log_page(tmp_path, "sw-s0-r0-c0", "stdout", offset)
        assert len(page["data"].encode()) <= MAX_LOG_PAGE_BYTES
        assert page["size"] == len(data) and page["offset"] == offset
        if not page["data"]:
            break
        got += page["data"].encode()
        offset = page["next_offset"]
        pages += 1
    assert got == data and pages == 3


def test_a_missing_file_or_trial_is_an_empty_page(tmp_path: Path) -> None:
    trial(tmp_path)
    for tid in ("sw-s0-r0-c0", "sw-s0-r0-c9"):
        page = read_log_page(tmp_path, tid, "stderr", 0)
        assert page == {
            "offset": 0,
            "next_offset": 0,
            "size": 0,
            "data": "",
            "omitted": 0,
            "marker_start": None,
            "tail_start": None,
        }


def test_an_offset_past_the_end_is_empty_even_at_2_63(tmp_path: Path) -> None:
    (trial(tmp_path) / results.STDERR_FILE).write_bytes(b"abc")
    for offset in (3, 100, 2**62):
        page = read_log_page(tmp_path, "sw-s0-r0-c0", "stderr", offset)
        assert page["data"] == "" and page["next_offset"] == offset


def test_invalid_utf8_is_replaced_not_refused(tmp_path: Path) -> None:
    (trial(tmp_path) / results.STDOUT_FILE).write_bytes(b"ok \xff\xfe end\x00")
    assert read_log_page(tmp_path, "sw-s0-r0-c0", "stdout", 0)["data"] == "ok \ufffd\ufffd end\x00"


def test_a_symlinked_log_is_refused_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("token")
    os.symlink(secret, trial(tmp_path) / results.STDOUT_FILE)
    with pytest.raises(LogUnavailable):
        read_log_page(tmp_path, "sw-s0-r0-c0", "stdout", 0)


def test_a_symlinked_trial_directory_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / results.STDOUT_FILE).write_text("not the trial's")
    results.trials_root(tmp_path).mkdir(parents=True)
    os.symlink(elsewhere, results.trial_dir(tmp_path, "sw-s0-r0-c0"))
    with pytest.raises(LogUnavailable):
        read_log_page(tmp_path, "sw-s0-r0-c0", "stdout", 0)


def test_a_fifo_does_not_hang_the_agent(tmp_path: Path) -> None:
    os.mkfifo(trial(tmp_path) / results.STDERR_FILE)
    with pytest.raises(LogUnavailable):
        read_log_page(tmp_path, "sw-s0-r0-c0", "stderr", 0)


def test_a_directory_in_place_of_the_log_is_refused(tmp_path: Path) -> None:
    (trial(tmp_path) / results.STDOUT_FILE).mkdir()
    with pytest.raises(LogUnavailable):
        read_log_page(tmp_path, "sw-s0-r0-c0", "stdout", 0)
