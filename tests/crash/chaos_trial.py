"""The chaos test's trial: a real process that leaves a marker per start and a metrics history.

    python chaos_trial.py --x=X --steps=N --markers=DIR --reports=K --sleep=S

Each start creates ``DIR/<trial id>.<pid>`` (so a trial started twice leaves
two markers), then reports ``K`` intermediate lines ``{"step": i, "progress":
i/K}`` ``S/K`` seconds apart, then the final ``{"loss": (x - 0.3)**2 + 1/N}``,
the objective ``tests.crash.harness.expected_outcome`` computes.
"""

import json
import os
import sys
import time
from pathlib import Path

opts = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--"))
trial = os.environ["HBD_TRIAL_ID"]
(Path(opts["markers"]) / f"{trial}.{os.getpid()}").touch(exist_ok=False)
metrics_file = os.environ["HBD_METRICS_FILE"]


def report(**metrics: float) -> None:
    with open(metrics_file, "a") as f:  # one line, flushed and synced, as hbd.report does
        f.write(json.dumps(metrics) + "\n")
        f.flush()
        os.fsync(f.fileno())


x, steps, reports = float(opts["x"]), int(opts["steps"]), int(opts["reports"])
for i in range(1, reports + 1):
    time.sleep(float(opts["sleep"]) / reports)
    report(step=i, progress=i / reports)
report(loss=(x - 0.3) ** 2 + 1.0 / steps)
