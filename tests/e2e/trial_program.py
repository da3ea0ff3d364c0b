"""The trial program of the end-to-end tests: a real process that the executor runs.

It appends `start`/`end` lines (trial id, pid, monotonic time) to the file
given by --log, so tests can measure concurrency and find every process.
Behaviour by --mode: ok (loss from x and the resource), sleep (runs until
killed), fail (exits 1 for x > --fail-above). With --hold=FILE a trial waits
while FILE exists (at most HOLD_CAP_SECONDS): a test keeps trials running
exactly as long as it needs them running, instead of a fixed sleep that must
be long enough on the slowest machine and is wasted everywhere else.
"""

import json
import os
import sys
import time
from pathlib import Path

import hbd

# A held trial gives up holding after this, so that a test that failed before
# releasing it leaves nothing running for long.
HOLD_CAP_SECONDS = 60.0

opts = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--"))
trial = os.environ["HBD_TRIAL_ID"]
log = opts["log"]


def note(what: str) -> None:
    with open(log, "a") as f:
        f.write(
            json.dumps({"what": what, "trial": trial, "pid": os.getpid(), "t": time.monotonic()})
            + "\n"
        )


note("start")
if opts.get("fail_once") == "1":  # a flaky host: each trial run fails its first attempt
    marker = Path(log).with_name(trial.split("-a")[0] + ".failed-once")
    if not marker.exists():
        marker.write_text("")
        note("end")
        sys.exit(75)
hold = opts.get("hold", "")
if hold:
    until = time.monotonic() + HOLD_CAP_SECONDS
    while os.path.exists(hold) and time.monotonic() < until:
        time.sleep(0.02)
x, steps = float(opts["x"]), int(opts["steps"])
resumed = 0
resume = os.environ.get("HBD_RESUME_FROM")
if resume:
    resumed = int((Path(resume) / "steps").read_text())
(Path(os.environ["HBD_CHECKPOINT_DIR"]) / "steps").write_text(str(steps))
if opts.get("mode") == "sleep":
    hbd.report(loss=1.0)
    time.sleep(300)
time.sleep(float(opts.get("sleep", "0")))
if x > float(opts.get("fail_above", "2")):
    note("end")
    print(f"x={x} is too large", file=sys.stderr)
    sys.exit(1)
hbd.report(loss=(x - 0.3) ** 2 + 1.0 / steps, resumed_from=resumed)
note("end")
