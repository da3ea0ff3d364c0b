"""The trial program of the corpus's `hbd run` test: a small Polyaxon-style training script.

It takes Polyaxon-style arguments (`--lr=0.1 --epochs=3 --num_steps=9 ...`),
checks it was started in the spec's workingDir with the container's env,
writes its argv to the trial's outputs path, reports a loss, and with
`--hang=true` sleeps past the spec's termination.timeout.
"""

import json
import os
import sys
import time
from pathlib import Path

import hbd

opts = {}
for arg in sys.argv[1:]:
    if arg.startswith("--") and "=" in arg:
        key, value = arg[2:].split("=", 1)
        opts[key] = value
    elif arg.startswith("--"):
        opts[arg[2:]] = "true"  # a flag

out = Path(opts["out"])
out.mkdir(parents=True, exist_ok=True)
(out / "argv.json").write_text(
    json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "env": os.environ.get("DATASET")})
)
if opts.get("hang") == "true" and float(opts["lr"]) > 0.05:
    time.sleep(60)  # the spec's timeout stops this first
lr, steps, epochs = float(opts["lr"]), int(opts["num_steps"]), int(opts["epochs"])
hbd.report(loss=abs(lr - 0.03) + 1.0 / (steps * epochs))
