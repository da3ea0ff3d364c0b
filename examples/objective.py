"""A synthetic objective for ``reference-fixed.yaml``, for ``hbd simulate``.

    hbd simulate examples/reference-fixed.yaml --objective objective:loss

``loss(config, num_steps)`` imitates a training run's validation loss after
``num_steps`` steps: a power-law learning curve falling from about 0.9 towards
an asymptote that depends on the configuration. A larger learning rate learns
faster (it looks best after a few steps) but settles higher; the best final
loss is near lr = 0.45 with dropout 0.25 and relu. That trade-off is what
makes early rungs misleading and is why Hyperband also runs brackets that
start with more resource. Deterministic: no noise, no state.

An objective may also return a dict of metrics (``{"loss": ..., "accuracy": ...}``);
``metrics`` below does, which lets the spec's ``accuracy >= 0.9`` early-stopping
condition fire.
"""

from __future__ import annotations

import math
from typing import Any


def _asymptote(lr: float, dropout: float, activation: str) -> float:
    return (
        0.03
        + 0.6 * (lr - 0.3) ** 2  # too small or too large a step settles higher
        + 0.4 * (dropout - 0.25)  # 0.25 regularises better than 0.3 here
        + (0.03 if activation == "sigmoid" else 0.0)  # sigmoid saturates
    )


def loss(config: dict[str, Any], num_steps: int) -> float:
    lr, dropout, activation = (
        float(config["lr"]),
        float(config["dropout"]),
        str(config["activation"]),
    )
    rate = 0.25 + lr  # how fast the curve falls: faster with a larger step
    start = 0.9 + (0.1 if activation == "sigmoid" else 0.0)
    return _asymptote(lr, dropout, activation) + start * math.pow(num_steps, -rate)


def metrics(config: dict[str, Any], num_steps: int) -> dict[str, float]:
    value = loss(config, num_steps)
    return {"loss": value, "accuracy": 1.0 - 1.15 * value}
