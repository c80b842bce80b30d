"""Issue 18, item 3, the peer's side: Torch-Pruning's overhead on the same work, this machine.

The issue compares ``prune()``'s overhead (10 rounds on ResNet-8, everything but the
fine-tuning fits) with "about 1.3 s for the leading PyTorch library", measured elsewhere.
This script measures that library here, beside ``benchmarks/prune_overhead.py``: the same
ResNet-8 (16-channel stem, stages of 16/32/64 channels with BatchNorm and 1x1 projections,
global pooling, Linear head; PyTorch's NCHW layout), the same 640 calibration digits at batch
32, 10 rounds (``iterative_steps=10``, channel ratio 0.5, local ranking, head ignored), a
one-epoch fine-tuning fit of 128 digits at batch 64 after each round (a new Adam each round:
Torch-Pruning does not carry optimizer state through a pruning), timed apart and left out of
the overhead as ours are. Signals: ``taylor`` (``GroupTaylorImportance``: before each step a
forward + backward of the SUM of per-example losses over the 640 digits, BatchNorm in
inference mode as ours) and ``l1`` (``MagnitudeImportance(p=1)``, no pass). A floor row: a
plain forward + backward of the weights over the same digits, 10 times (the same floor as
prune_overhead.py's, in PyTorch).

It needs PyTorch, which the project does not install: a separate virtual environment,
``python -m venv tv && tv/bin/pip install torch==2.13.0 numpy && tv/bin/pip install --no-deps
torch-pruning==1.6.0`` (a CPU build of torch 2.13.0 lies on this machine's disk). The digits
come from the project's environment: ``.venv/bin/python benchmarks/prune_overhead.py
--save-digits out/digits640.npz``.

Usage: tv/bin/python benchmarks/peer_overhead.py --digits out/digits640.npz [--reps 2]
Writes benchmarks/results/peer_overhead.{json,md} (without the project's helpers: this
environment has no Keras).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
import torch_pruning as tp
from torch import nn

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.a = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn_a = nn.BatchNorm2d(cout)
        self.b = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn_b = nn.BatchNorm2d(cout)
        self.proj = None
        if stride != 1 or cin != cout:
            self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))  # fmt: skip

    def forward(self, x):
        y = self.bn_b(self.b(F.relu(self.bn_a(self.a(x)))))
        return F.relu((x if self.proj is None else self.proj(x)) + y)


class ResNet8(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16),
                                  nn.ReLU())  # fmt: skip
        self.blocks = nn.Sequential(Block(16, 16, 1), Block(16, 32, 2), Block(32, 64, 2))
        self.head = nn.Linear(64, classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def batches(x, y, size):
    for i in range(0, len(x), size):
        yield x[i : i + size], y[i : i + size]


def gradient_pass(model, x, y):
    """Forward + backward of the summed loss over the digits at batch 32, BN in inference."""
    model.eval()
    model.zero_grad()
    for xb, yb in batches(x, y, 32):
        F.cross_entropy(model(xb), yb, reduction="sum").backward()


def fit(model, x, y):
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    for xb, yb in batches(x, y, 64):
        optimizer.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        optimizer.step()


def one_run(signal, x, y) -> dict:
    torch.manual_seed(0)
    model = ResNet8()
    example = x[:1]
    base_macs, _ = tp.utils.count_ops_and_params(model, example)
    importance = (tp.importance.GroupTaylorImportance() if signal == "taylor"
                  else tp.importance.MagnitudeImportance(p=1))  # fmt: skip
    fits = 0.0
    start = time.perf_counter()
    pruner = tp.pruner.MetaPruner(model, example, importance=importance, pruning_ratio=0.5,
                                  iterative_steps=10, ignored_layers=[model.head])  # fmt: skip
    for _ in range(10):
        if signal == "taylor":
            gradient_pass(model, x, y)
        pruner.step()
        t = time.perf_counter()
        fit(model, x[:128], y[:128])
        fits += time.perf_counter() - t
    total = time.perf_counter() - start
    macs, params = tp.utils.count_ops_and_params(model, example)
    return {"seconds": total - fits, "fit_seconds": fits, "macs_fraction": macs / base_macs,
            "params": int(params)}  # fmt: skip


def floor(x, y, rounds=10) -> dict:
    torch.manual_seed(0)
    model = ResNet8()
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        gradient_pass(model, x, y)
        times.append(time.perf_counter() - t)
    return {"first_s": times[0], "later_s": times[1:], "total_s": sum(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--digits", required=True, help="npz with x (N, 28, 28, 1) and y")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--out", default="peer_overhead")
    args = parser.parse_args()
    if not os.path.isfile(args.digits):
        parser.error(f"no digits file at {args.digits!r}; write it with `.venv/bin/python "
                     "benchmarks/prune_overhead.py --save-digits out/digits640.npz`")
    with np.load(args.digits) as data:
        x, y = data["x"], data["y"]
    if x.shape[1:] != (28, 28, 1) or len(x) < 640 or len(y) != len(x) or not np.isfinite(x).all():
        parser.error(f"--digits must hold at least 640 finite digits x (N, 28, 28, 1) and y (N,). "
                     f"Received: x {x.shape}, y {y.shape}")
    x = torch.from_numpy(np.ascontiguousarray(x[:640].transpose(0, 3, 1, 2)))
    y = torch.from_numpy(y[:640].astype(np.int64))
    load = [os.getloadavg()[0]]
    runs = {"taylor": [], "l1": []}
    floors = []
    for rep in range(args.reps):
        for signal in runs:
            runs[signal].append(one_run(signal, x, y))
            print(f"{signal} repetition {rep + 1}: {runs[signal][-1]['seconds']:.2f} s overhead, "
                  f"{runs[signal][-1]['fit_seconds']:.2f} s fits, MACs "
                  f"{runs[signal][-1]['macs_fraction']:.3f} (load {os.getloadavg()[0]:.1f})",
                  flush=True)  # fmt: skip
        floors.append(floor(x, y))
    load.append(os.getloadavg()[0])
    result = {"torch": torch.__version__, "torch_pruning": tp.__version__,
              "threads": torch.get_num_threads(), "machine": platform.machine(),
              "load": load, "runs": runs, "floor": floors}  # fmt: skip
    lines = [f"Torch-Pruning {tp.__version__} on torch {torch.__version__} (CPU, "
             f"{torch.get_num_threads()} threads), ResNet-8 NCHW, 640 digits, 10 rounds, channel "
             f"ratio 0.5; overhead = wall clock minus the fine-tuning fits; load average "
             f"{load[0]:.1f} at the start, {load[1]:.1f} at the end.", "",
             "| signal | overhead s per repetition | median | fits s (median) | MACs left |",
             "|---|---|---|---|---|"]  # fmt: skip
    for signal, reps in runs.items():
        each = ", ".join(f"{r['seconds']:.2f}" for r in reps)
        lines.append(f"| {signal} | {each} | "
                     f"**{statistics.median(r['seconds'] for r in reps):.2f}** | "
                     f"{statistics.median(r['fit_seconds'] for r in reps):.2f} | "
                     f"{reps[0]['macs_fraction']:.3f} |")  # fmt: skip
    lines += ["", "| pass | first call s | each later call s (median) | 10 calls s (median) |",
              "|---|---|---|---|",
              f"| floor (plain forward + backward, batch 32) | "
              f"{statistics.median(f['first_s'] for f in floors):.3f} | "
              f"{statistics.median(v for f in floors for v in f['later_s']):.3f} | "
              f"{statistics.median(f['total_s'] for f in floors):.2f} |"]  # fmt: skip
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, args.out + ".json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(RESULTS, args.out + ".md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
