"""A tiny trial for the Ray tests: reports LINES metrics lines, SLEEP seconds apart.

Appends its pid to MARKS (when given) first, so tests count how often it started.
"""

import json
import os
import sys
import time

lines, sleep = int(sys.argv[1]), float(sys.argv[2])
marks = sys.argv[3] if len(sys.argv) > 3 else ""
if marks:
    with open(marks, "a") as f:
        f.write(f"{os.getpid()}\n")
for i in range(lines):
    with open(os.environ["HBD_METRICS_FILE"], "a") as f:
        f.write(json.dumps({"loss": 1.0 / (i + 1), "step": i}) + "\n")
    time.sleep(sleep)
print("env", os.environ["HBD_RESOURCE"], os.environ["epochs"], file=sys.stderr)
