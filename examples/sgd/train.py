"""A real, small trial: a one-hidden-layer network trained by mini-batch SGD on data it generates.

Run by the hbd executor as `python3 examples/sgd/train.py --lr=... --steps=...`.
It reports its loss with hbd.report() as it trains, saves its weights to
$HBD_CHECKPOINT_DIR and, when promoted with `resume: true`, continues from the
weights in $HBD_RESUME_FROM instead of starting over. numpy only.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

try:
    from hbd import report
except ImportError:  # run outside hbd's environment: write the metrics file ourselves

    def report(**metrics: float) -> None:
        path = os.environ.get("HBD_METRICS_FILE")
        if path:
            with open(path, "a") as f:
                f.write(json.dumps(metrics) + "\n")


DATA_SEED = 1234  # every trial sees the same task
N_TRAIN, N_VALID, N_FEATURES, HIDDEN = 2000, 500, 10, 32
BATCHES_PER_STEP = 20  # one unit of the Hyperband resource


def make_data() -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(DATA_SEED)
    x = rng.normal(size=(N_TRAIN + N_VALID, N_FEATURES))
    w = rng.normal(size=N_FEATURES)
    y = np.sin(x @ w / 2) + 0.1 * rng.normal(size=len(x))
    return x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]


def activate(z: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    if kind == "relu":
        return np.maximum(z, 0), (z > 0).astype(z.dtype)
    if kind == "tanh":
        a = np.tanh(z)
        return a, 1 - a**2
    s = 1 / (1 + np.exp(-z))
    return s, s * (1 - s)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--activation", default="relu")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, required=True)
    args = p.parse_args()

    x, y, xv, yv = make_data()
    rng = np.random.default_rng(
        int.from_bytes(os.environ.get("HBD_TRIAL_ID", "x").encode()[-8:], "little")
    )
    params = {
        "w1": rng.normal(scale=1 / np.sqrt(N_FEATURES), size=(N_FEATURES, HIDDEN)),
        "b1": np.zeros(HIDDEN),
        "w2": rng.normal(scale=1 / np.sqrt(HIDDEN), size=HIDDEN),
        "b2": np.zeros(1),
    }
    done = 0
    resume = os.environ.get("HBD_RESUME_FROM")
    if resume and (Path(resume) / "model.npz").exists():
        saved = np.load(Path(resume) / "model.npz")
        params = {k: saved[k] for k in params}
        done = int(saved["step"])

    def valid_loss() -> float:
        h, _ = activate(xv @ params["w1"] + params["b1"], args.activation)
        return float(np.mean((h @ params["w2"] + params["b2"] - yv) ** 2))

    for batch in range(done * BATCHES_PER_STEP, args.steps * BATCHES_PER_STEP):
        idx = rng.integers(0, N_TRAIN, size=args.batch_size)
        xb, yb = x[idx], y[idx]
        z = xb @ params["w1"] + params["b1"]
        h, dh = activate(z, args.activation)
        mask = (rng.random(h.shape) >= args.dropout) / (1 - args.dropout)
        h = h * mask
        err = h @ params["w2"] + params["b2"] - yb
        g_out = 2 * err / len(yb)
        grad_h = np.outer(g_out, params["w2"]) * mask * dh
        params["w2"] -= args.lr * h.T @ g_out
        params["b2"] -= args.lr * g_out.sum(keepdims=True)
        params["w1"] -= args.lr * xb.T @ grad_h
        params["b1"] -= args.lr * grad_h.sum(axis=0)
        if (batch + 1) % BATCHES_PER_STEP == 0:
            loss = valid_loss()
            report(loss=loss if np.isfinite(loss) else 1e9, step=(batch + 1) // BATCHES_PER_STEP)

    if done >= args.steps:  # nothing left to train: report where we are
        report(loss=valid_loss(), step=done)
    checkpoint = os.environ.get("HBD_CHECKPOINT_DIR")
    if checkpoint:
        np.savez(Path(checkpoint) / "model.npz", step=args.steps, **params)


if __name__ == "__main__":
    main()
