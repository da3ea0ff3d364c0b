"""A trial that reports a learning curve: its loss at every step up to its resource.

argv: x opt width steps sleep fail_above. Sleeps ``sleep`` seconds spread over
its steps (a slow-ish trial a browser can watch), exits 1 when x > fail_above.
"""

import sys
import time

import hbd

x, opt, width, steps = float(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
sleep, fail_above = float(sys.argv[5]), float(sys.argv[6])
if x > fail_above:
    print(f"x={x} is above {fail_above}", file=sys.stderr)
    sys.exit(1)
floor = (x - 0.3) ** 2 + (0.05 if opt == "sgd" else 0.0) + 1.0 / width
for step in range(1, steps + 1):
    time.sleep(sleep / steps)
    hbd.report(loss=floor + 1.0 / step, step=step)
