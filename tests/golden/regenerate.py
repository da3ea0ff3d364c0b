"""Write the golden event logs replayed by test_golden.py.

Run only when a change to the core's decisions is intended, and say so in the
commit: a golden log is a promise that old sweeps replay to the same decisions.

    .venv/bin/python -m tests.golden.regenerate
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from hbd.core.codec import SUBMITTED, decision_record, observation_record
from hbd.core.events import Begin
from hbd.core.sweep import SweepMachine
from tests.core.helpers import (
    BOHB_OLD_DEFAULTS,
    BOHB_THIRD_DEFAULTS,
    drive,
    failing_every,
    interrupted_once_every,
    spec_dict,
)

HERE = Path(__file__).parent

CASES = {
    # name: (spec options, seed, completion-order seed, failing every k-th index, stop after)
    "r27-eta3-shuffled": ({"max_iterations": 27}, 5, 1, None, None),
    "r27-eta3-failures-resume": ({"max_iterations": 27, "resume": True}, 6, 2, 4, None),
    "r10-eta2-maximize": (
        {"max_iterations": 10, "eta": 2, "direction": "maximize"},
        7,
        3,
        None,
        None,
    ),
    "r27-early-stop": (
        {
            "max_iterations": 27,
            "early_stopping": [{"kind": "metric_early_stopping", "metric": "loss", "value": 0.3}],
        },
        8,
        4,
        None,
        None,
    ),
    "r9-user-stop": ({"max_iterations": 9}, 9, 5, None, 6),
    "r27-retries": ({"max_iterations": 27, "max_retries": 2}, 10, 6, 4, None),
    # Interrupted runs start again as the same trial and use none of the retries.
    "r27-interrupted": ({"max_iterations": 27, "max_retries": 1}, 11, 7, 4, None),
    # every run fails: the first 10 finished runs stop the sweep (FIRST_FAILURES_STOP)
    "r27-first-failures": (
        {"max_iterations": 27, "max_retries": 1, "first_failures_stop": 10},
        12,
        7,
        1,
        None,
    ),
    # BOHB as main wrote it before the opening lag was recorded (lazy, no "lag"
    # field): these replay with the rule of that time (search.py, LEGACY_SEARCH).
    "r27-bohb-sync-2it": (
        {"max_iterations": 27, "search": {"tuner": {"hubRef": "bohb"}, "iterations": 2}},
        13,
        8,
        None,
        None,
    ),
    "r27-bohb-async-2it": (
        {
            "max_iterations": 27,
            "search": {
                "tuner": {"hubRef": "bohb"},
                "promotion": "asynchronous",
                "iterations": 2,
            },
        },
        14,
        9,
        None,
        None,
    ),
    # BOHB as main wrote it before the brackets' order was recorded (an
    # "opening" without "order"): its second iteration replays in Hyperband's
    # order, s_max first (search.py).
    "r27-bohb-lag-2it": (
        {"max_iterations": 27, "search": {"tuner": {"hubRef": "bohb"}, "iterations": 2}},
        15,
        10,
        4,
        None,
    ),
    # BOHB with the order recorded: the second iteration runs s = 0 first.
    "r27-bohb-ascending-async-2it": (
        {
            "max_iterations": 27,
            "search": {
                "tuner": {"hubRef": "bohb"},
                "promotion": "asynchronous",
                "iterations": 2,
            },
        },
        16,
        11,
        None,
        None,
    ),
}
# Cases whose every k-th index has its first run interrupted.
INTERRUPT_EVERY = {"r27-interrupted": 3}
# The search record main wrote (Search.to_json() before "lag"), pinned so that a
# regeneration keeps these logs what they promise: a log of that time.
LEGACY_SEARCH: dict[str, dict[str, object]] = {
    name: {
        "sampler": "bohb",
        "settings": BOHB_OLD_DEFAULTS,
        "promotion": promotion,
        "lazy": True,
        "iterations": 2,
    }
    for name, promotion in (
        ("r27-bohb-sync-2it", "synchronous"),
        ("r27-bohb-async-2it", "asynchronous"),
    )
}
# The records main wrote once the opening rule was recorded, before and after
# the brackets' order was (pinned, as above: a regeneration keeps them so).
LEGACY_SEARCH["r27-bohb-lag-2it"] = {
    "sampler": "bohb",
    "settings": BOHB_THIRD_DEFAULTS,
    "promotion": "synchronous",
    "lazy": True,
    "opening": {"lag": 0, "slope": 1, "first": 0},
    "iterations": 2,
}
LEGACY_SEARCH["r27-bohb-ascending-async-2it"] = {
    "sampler": "bohb",
    "settings": BOHB_THIRD_DEFAULTS,
    "promotion": "asynchronous",
    "lazy": True,
    "opening": {"lag": 0, "slope": 1, "first": 0, "order": "ascending-after-first"},
    "iterations": 2,
}


def main() -> None:
    for name, (opts, seed, order, fail_every, stop_after) in CASES.items():
        spec_opts = {k: v for k, v in opts.items() if k != "first_failures_stop"}
        submitted = {"spec_json": spec_dict(**spec_opts), "seed": seed}
        if "first_failures_stop" in opts:
            submitted["first_failures_stop"] = opts["first_failures_stop"]
        if name in LEGACY_SEARCH:
            submitted["search"] = LEGACY_SEARCH[name]
        machine = SweepMachine.for_submitted(submitted, sweep_id="golden")
        base = interrupted_once_every(INTERRUPT_EVERY[name]) if name in INTERRUPT_EVERY else None
        outcome = failing_every(fail_every, *([base] if base else [])) if fail_every else base
        kwargs = {"rng": random.Random(order), "stop_after": stop_after}
        run = drive(machine, outcome, **kwargs) if outcome else drive(machine, **kwargs)
        lines = [{"type": SUBMITTED, "payload": submitted}]
        for obs, decisions in zip(run.observations, run.steps, strict=True):
            if not isinstance(obs, Begin):
                t, p = observation_record(obs)
                lines.append({"type": t, "payload": p})
            for d in decisions:
                t, p = decision_record(d)
                lines.append({"type": t, "payload": p})
        path = HERE / f"{name}.jsonl"
        path.write_text("".join(json.dumps(line, sort_keys=True) + "\n" for line in lines))
        print(f"{path.name}: {len(lines)} records")


if __name__ == "__main__":
    main()
