"""Trial program of the checkpoint tests: a checkpoint of known size, resumed from its parent's.

Writes ``weights.bin`` of ``--size`` bytes (starting ``ckpt <trial id>``) to
``HBD_CHECKPOINT_DIR``; a resumed trial first reads its parent's and reports
``resumed`` (its size, -1 if it is not a checkpoint this program wrote, 0 if
there was none). The loss ranks trials by their index (c0 best), then by
resource, then by rung (a promoted trial beats a fresh one at the same
resource), so the best trial and its lineage are known in advance. A trial
whose id ends with ``--gated`` waits (up to a minute) for the file ``--gate``.
"""

import os
import sys
import time
from pathlib import Path

import hbd

opts = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--"))
trial = os.environ["HBD_TRIAL_ID"]
size, steps = int(opts["size"]), int(opts["steps"])
resumed = 0
resume = os.environ.get("HBD_RESUME_FROM")
if resume:
    try:
        data = (Path(resume) / "weights.bin").read_bytes()
        resumed = len(data) if data.startswith(b"ckpt ") else -1
    except FileNotFoundError:
        resumed = 0
ckpt = Path(os.environ["HBD_CHECKPOINT_DIR"])
ckpt.mkdir(parents=True, exist_ok=True)
(ckpt / "weights.bin").write_bytes(f"ckpt {trial} ".encode().ljust(size, b"."))
gated = opts.get("gated")
if gated and trial.endswith(gated):
    deadline = time.monotonic() + 60
    while not Path(opts["gate"]).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
index = int(trial.split("-c")[1].split("-")[0])
rung = int(trial.split("-r")[1].split("-")[0])
hbd.report(loss=index + 1.0 / steps - 0.001 * rung, resumed=resumed)
