"""`hbd logs --follow` across the log cap: the file shrinks under the follower (review 1)."""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path

from hbd.cli import logs
from hbd.executor import results, supervisor
from hbd.executor.logpages import read_log_page
from hbd.executor.supervisor import CappedLog

CAP = 4096
FILE_MARKER = re.compile(r"\n\[hbd: output capped; +\d+ bytes omitted\]\n")


def _follow_step(workdir: Path, offset: int, omitted: int, out: list[str]) -> tuple[int, int]:
    """One turn of cmd_logs' loop: a page, then either a re-sync or its text printed."""
    page = read_log_page(workdir, "t1", "stdout", offset, limit=300)
    moved = logs._resync(offset, omitted, page)
    omitted = page["omitted"]
    if moved is not None:
        offset, cut = moved
        if cut:
            out.append(logs.CUT_MARKER)
        return offset, omitted
    out.append(page["data"])
    return page["next_offset"], omitted


def test_a_follower_keeps_its_place_when_the_log_is_cut_to_its_cap(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    for d in (results.state_dir(workdir, "t1"), results.trial_dir(workdir, "t1")):
        results.make_private_dir(d)
    launch = json.dumps({"log_cap_bytes": CAP}).encode()
    results.write_state_file(workdir, "t1", supervisor.LAUNCH_FILE, launch)
    stream = "".join(f"line {i:06d}\n" for i in range(4000))
    fd = os.open(results.trial_dir(workdir, "t1") / results.STDOUT_FILE, os.O_RDWR | os.O_CREAT)
    rng = random.Random(7)
    out: list[str] = []
    offset = omitted = 0
    try:
        log = CappedLog(fd, CAP)
        at = 0
        while at < len(stream):
            n = rng.randint(1, 900)
            log.write(stream[at : at + n].encode())
            at += n
            for _ in range(rng.randint(0, 3)):  # the follower lags, keeps up, or races ahead
                offset, omitted = _follow_step(workdir, offset, omitted, out)
        for _ in range(200):  # the trial ended: read to the end
            offset, omitted = _follow_step(workdir, offset, omitted, out)
    finally:
        os.close(fd)
    printed = "".join(out)
    assert log.omitted > 0 and logs.CUT_MARKER in printed  # the cap was passed, the cut said
    # Every piece printed is output in order, never twice, and the follower got to its end.
    pieces = [p for p in re.split(FILE_MARKER.pattern + "|" + re.escape(logs.CUT_MARKER), printed)]
    at = 0
    for piece in pieces:
        if not piece:
            continue
        found = stream.find(piece, at)
        assert found >= at, (piece[:40], at)
        at = found + len(piece)
    assert at == len(stream)
    assert printed.endswith("line 003999\n")
