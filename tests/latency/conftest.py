"""Fixtures for the predictor and loss tests: a synthetic-but-structured profile of both tiny spaces.

The op table follows a roofline-like law (``ms = launch + flops / peak + bytes / bandwidth``, per kind, with
seeded multiplicative noise); whole models measure as the sum of their ops times a Context-dependent factor
plus a per-op dispatch cost and a fixed per-call overhead, so that a calibrated predictor has something real to
correct and the plain lookup table is measurably off.
"""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pandas as pd
import pytest

from nas.spaces import Context, get_space
from nas.spaces.ops import op_bytes, op_flops

SPACES = (("adabert", "tiny"), ("nasbert", "tiny"))
GRID = {"batch": [1, 4], "seq_len": [16, 32, 64]}
LAUNCH_MS = {"conv": 0.010, "avgpool": 0.006, "maxpool": 0.006, "identity": 0.002, "mha": 0.030, "ffn": 0.015,
             "sepconv": 0.020, "embed": 0.012, "head": 0.008, "proj": 0.006, "combine": 0.004, "add": 0.003}


def op_ms(spec, ctx: Context) -> float:
    return LAUNCH_MS[spec.kind] + op_flops(spec, ctx) / 2e7 + op_bytes(spec, ctx) / 8e6


def whole_ms(space, arch, ctx: Context) -> float:
    bag = space.arch_ops(arch, cse=True)  # the profile's backend is onnxruntime: repeated pooling runs once
    fusion = 0.85 + 0.03 * math.log(ctx.tokens)  # whole graphs run a bit faster than isolated ops
    return 0.05 + sum(n * (fusion * op_ms(s, ctx) + 0.003) for s, n in bag.items())


def make_profile(folder: Path, seed: int = 0, n_cal: int = 24, n_test: int = 24, device: str = "synthetic-cpu",
                 grid: dict | None = None, scale: float = 1.0, e2e_ctxs=None) -> Path:
    """Write a profile folder of both tiny spaces (deterministic for a seed)."""
    grid = grid or GRID
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    ops_rows, e2e_rows = [], []
    specs = sorted({s for name, preset in SPACES for s in get_space(name, preset).unique_ops()}, key=lambda s: s.key)
    for s in specs:
        for b in grid["batch"]:
            for t in grid["seq_len"]:
                ctx = Context(b, t)
                ms = scale * op_ms(s, ctx) * (1 + 0.01 * rng.uniform(-1, 1))
                ops_rows.append({"op_key": s.key, "kind": s.kind, "hidden": s.hidden, "batch": b, "seq_len": t,
                                 "latency_p50_ms": ms, "latency_p10_ms": ms * 0.98, "latency_p90_ms": ms * 1.03,
                                 "cv": 0.01, "n_runs": 50, "flops": op_flops(s, ctx), "bytes": op_bytes(s, ctx)})
    ctxs = e2e_ctxs or [Context(1, 32), Context(4, 16), Context(4, 64)]
    for name, preset in SPACES:
        space = get_space(name, preset)
        for split, n, off in (("calibration", n_cal, 0), ("test", n_test, 10_000)):
            for i in range(n):
                arch = space.sample(seed * 100_000 + off + i)
                ctx = ctxs[i % len(ctxs)]
                ms = scale * whole_ms(space, arch, ctx) * (1 + 0.005 * rng.uniform(-1, 1))
                e2e_rows.append({"arch_json": arch.key, "space": name, "preset": preset, "split": split,
                                 "batch": ctx.batch, "seq_len": ctx.seq_len, "latency_p50_ms": ms,
                                 "latency_p10_ms": ms * 0.98, "latency_p90_ms": ms * 1.03, "cv": 0.01, "n_runs": 30,
                                 "flops": space.flops(arch, ctx), "params": space.analytic_params(arch)})
    meta = {"schema": "hwnas.profile/1", "tool_version": "test", "created": "2024-01-01",
            "device": {"cpu_model": device, "cores": 2},
            "backend": {"name": "onnxruntime", "version": "test", "device": "cpu", "threads": 1},
            "protocol": {"statistic": "p50", "seed": 0}, "grid": grid,
            "spaces": [{"name": n, "preset": p, "version": 1, "num_labels": 2} for n, p in SPACES]}
    (folder / "profile.json").write_text(json.dumps(meta, indent=1))
    pd.DataFrame(ops_rows).to_csv(folder / "ops.csv", index=False)
    pd.DataFrame(e2e_rows).to_csv(folder / "e2e.csv", index=False)
    return folder


@pytest.fixture(scope="session")
def synth_profile(tmp_path_factory) -> Path:
    return make_profile(tmp_path_factory.mktemp("profile") / "synthetic_t1")


@pytest.fixture(scope="session")
def synth_profile_fast(tmp_path_factory) -> Path:
    """The same kind of device, 1.6x faster and with its own rows (for few-shot transfer)."""
    return make_profile(tmp_path_factory.mktemp("profile") / "synthetic_t2", seed=1, scale=0.6,
                        device="synthetic-cpu-2")


@pytest.fixture(scope="session")
def profile_maker():
    """:func:`make_profile`, for tests that write synthetic profiles of their own."""
    return make_profile
