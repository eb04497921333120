"""Compare devices: the same budget on different devices gives different architectures.

For each device (a profile with a fitted predictor), the best architecture under the budget with that device's
predictor, chosen one of three ways:

- ``--run`` of AdaBERT: re-derived from the run's architecture probabilities and fitted into the budget under
  the device's cost (quality: the architecture's log-probability under the search distribution);
- ``--run`` of NAS-BERT: re-selected from the run's per-block survivors under the device's cost, with the run's
  end-to-end re-scoring (quality: minus the mean block error);
- no run: a latency-only search that maximises parameters under the budget (quality: parameters, a *capacity
  proxy*, not an accuracy; every output says so).

Then every chosen architecture is evaluated on every device (predicted; measured on each device that is this
machine, with its backend, threads and protocol), with the regret of shipping device A's model to device B: over
B's budget and by how much, or how much of the budget it leaves unused and what quality that costs against B's own
choice. Per device, the op mix and where the milliseconds go (per op kind, from the predictor).

>>> df = compare(["amd-epyc-2c_ort-1.31_t1", "amd-epyc-2c_torch-2.13_t1"], "nasbert", 3.0)   # doctest: +SKIP
>>> df.pivot(index="chosen_on", columns="evaluated_on", values="predicted_latency_ms")       # doctest: +SKIP
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from nas.errors import HwnasError
from nas.spaces import Context

log = logging.getLogger(__name__)

WINDOW = (0.935, 0.985)  # the engines' window before they move it by a predictor's own error (``aimed_window``);
# held fixed here, so that two devices' choices differ by their costs alone, not by how well each is profiled


class CompareError(HwnasError, ValueError):
    """Profiles, a run or an output folder a comparison cannot use (the message says which and the fix)."""


@dataclass
class Device:
    """One profile with its predictor, at the comparison's Context."""

    name: str  # the profile's folder name (made unique)
    prof: Any  # latency.profile_data.ProfileData
    predictor: Any
    space: Any
    cost: Any  # CostModel at the Context
    here: bool = False  # this machine is the profile's device (measured figures are taken)
    choice: dict = field(default_factory=dict)  # what was chosen for it


def load_devices(profiles: list[str], space_name: str, ctx: Context) -> list[Device]:
    """Open every profile's predictor; refuse fewer than two, a missing predictor, other presets or versions."""
    from latency.predictor import PredictorError, load_predictor
    from latency.profile_data import read_profile

    if len(profiles) < 2:
        raise CompareError(f"--profiles: give at least two profiles to compare (got {len(profiles)}); "
                           "`hwnas list profiles` shows the shipped ones")
    devices: list[Device] = []
    for p in profiles:
        prof = read_profile(p, need_ops=False)
        if not (prof.path / "predictor.json").is_file():
            raise CompareError(f"{prof.path}: no predictor fitted; run `hwnas fit {prof.path}` first")
        pred = load_predictor(prof.path, prof)
        try:
            cover = pred.cover(space_name)
        except PredictorError as e:
            raise CompareError(f"{prof.path}: {e}") from None
        space = pred.space(space_name, cover["preset"])
        name = prof.name if prof.name not in {d.name for d in devices} else f"{prof.name}#{len(devices)}"
        devices.append(Device(name, prof, pred, space, None))
    kinds = {(d.space.version, d.space.preset.name) for d in devices}
    if len(kinds) > 1:
        have = ", ".join(f"{d.name}: {space_name} v{d.space.version} preset {d.space.preset.name}" for d in devices)
        raise CompareError(f"the profiles cover different versions or presets of {space_name} ({have}); profile "
                           f"every device with the same preset (`hwnas profile --space {space_name} --preset ...`)")
    for d in devices:
        d.cost = d.predictor.cost_matrix(d.space, ctx)
    return devices


# ----------------------------------------------------------------------------------------------- choosing
class Chooser:
    """``chooser(device, budgets) -> [{"arch", "quality"} or None per budget]`` for one way of choosing."""

    def __init__(self, kind: str, run: Path | None, seed: int = 0) -> None:
        self.kind, self.run, self.seed = kind, run, seed
        if kind == "adabert":
            self.probs = _adabert_probs(run)
        elif kind == "nasbert":
            from nas.nasbert.run import Reselector

            self.reselect = Reselector(run)

    def __call__(self, d: Device, budgets: list[float]) -> list[dict | None]:
        if self.kind == "nasbert":
            from nas.arch import Architecture

            choices, table = self.reselect(d.cost, budgets)
            return [None if not ch.feasible else
                    {"arch": Architecture.from_json(table.loc[ch.row, "arch_json"]),
                     "quality": -float(table.loc[ch.row, "quality_estimate"])} for ch in choices]
        out = []
        for b in budgets:
            got = self._proxy(d, b) if self.kind == "proxy" else self._adabert(d, b)
            out.append(got if d.cost.value(d.space.indices(got["arch"])) <= b else None)
        return out

    def _proxy(self, d: Device, budget: float) -> dict:
        from latency.archsets import capacity_model, full_indices, latency_search

        cap = capacity_model(d.space)
        idx, _, _ = latency_search(d.space, d.cost, cap, budget, seed=self.seed)
        arch = d.space.from_indices(full_indices(d.space, idx))
        return {"arch": arch, "quality": float(cap.value(d.space.indices(arch)))}

    def _adabert(self, d: Device, budget: float) -> dict:
        from nas.adabert.derive import derive, fit_to_budget, log_prob

        arch, _ = fit_to_budget(d.space, self.probs, derive(d.space, self.probs), d.cost, WINDOW[0] * budget,
                                WINDOW[1] * budget)
        return {"arch": arch, "quality": log_prob(d.space, self.probs, arch)}


def _adabert_probs(run: Path) -> dict:
    import torch

    from nas.io import read_json_object

    f = run / "arch_weights.json"
    if not f.is_file():
        raise CompareError(f"--run {run}: no arch_weights.json (not a finished AdaBERT search); finish the search first")
    saved = read_json_object(f, CompareError, "re-run the search")
    return {k: torch.tensor(v) for k, v in saved["probabilities"].items()}


def run_kind(run: Path | None, space_name: str) -> str:
    """``proxy`` (no run), ``adabert`` or ``nasbert``; refuses a run of the other space."""
    if run is None:
        return "proxy"
    from nas.io import read_json_object

    f = Path(run) / "config.json"
    if not f.is_file():
        raise CompareError(f"--run {run}: not a search run folder (no config.json)")
    st = read_json_object(f, CompareError, "point --run at a search run folder")
    kind = "nasbert" if st.get("engine") == "nasbert" else "adabert"
    if st.get("space", kind) != space_name:
        raise CompareError(f"--run {run} searched the {st.get('space')} space, not {space_name}; pass --space "
                           f"{st.get('space')}")
    return kind


QUALITY = {"proxy": "parameters (a capacity proxy, not an accuracy)",
           "adabert": "log-probability under the AdaBERT run's architecture distribution",
           "nasbert": "minus the mean block error of the NAS-BERT run (higher is better)"}
METHOD = {"proxy": "latency-only search maximising parameters under the budget (no accuracy involved)",
          "adabert": "re-derived from the AdaBERT run's architecture weights under this device's cost",
          "nasbert": "re-selected from the NAS-BERT run's survivors under this device's cost"}


# ------------------------------------------------------------------------------------------ describing
def op_mix(space, arch) -> dict:
    """Counts of op kinds as run (with multiplicity), kernel sizes, widths and depth (searched ops that compute)."""
    from nas.spaces.ops import OP_REGISTRY

    ops = space.arch_ops(arch)
    kinds: Counter = Counter()
    kernels: Counter = Counter()
    widths: set = set()
    for spec, n in ops.items():
        if OP_REGISTRY[spec.kind].fixed or spec.kind == "add":
            continue
        kinds[spec.kind] += n
        if "k" in dict(spec.params):
            kernels[f"k={spec.get('k')}"] += n
        if spec.hidden:
            widths.add(spec.hidden)
    depth = sum(n for k, n in kinds.items() if k not in ("identity", "zero"))
    extra = {"cells": arch.choices["cells"]} if "cells" in arch.choices else {}
    return {"kinds": dict(sorted(kinds.items())), "kernels": dict(sorted(kernels.items())), "widths": sorted(widths),
            "depth": depth, **extra}


def breakdown(d: Device, arch, ctx: Context) -> dict[str, float]:
    """Predicted ms per op kind on device ``d`` (fixed parts and the per-model overhead as their own entries)."""
    from nas.spaces.ops import OP_REGISTRY, weights_mb

    _, ops = d.predictor.arch_bag(arch)  # what this device's backend runs (repeated pooling once on onnxruntime)
    specs = list(ops)
    ms = d.predictor.op_costs(d.space.name, specs, ctx)
    out: Counter = Counter()
    for spec, m in zip(specs, ms):
        key = "fixed parts" if OP_REGISTRY[spec.kind].fixed else spec.kind
        out[key] += float(m) * ops[spec]
    out["overhead"] += float(d.predictor.overhead_ms(d.space.name, ctx, weights_mb(ops)))  # with cold weights
    return dict(out)


# ------------------------------------------------------------------------------------------- the comparison
def compare(profiles: list[str], space: str, budget_ms: float, ctx: Context | None = None,
            run: str | Path | None = None, measure: bool = True, seed: int = 0,
            fronts: tuple[float, ...] = (0.5, 0.7, 1.0, 1.4, 2.0)) -> pd.DataFrame:
    """Choose per device, cross-evaluate, and return one row per (chosen on, evaluated on) pair.

    Args:
        profiles: two or more profile folders or shipped names (each with ``predictor.json``).
        space: ``adabert`` or ``nasbert``.
        budget_ms: the latency budget, the same on every device, at ``ctx``.
        ctx: the deployment Context (default batch 1, seq_len 128).
        run: a finished AdaBERT or NAS-BERT run to choose from (default: the parameter proxy).
        measure: time every chosen architecture on each device that is this machine.
        fronts: each device's choices are also made at these multiples of the budget (its latency-quality front,
            in ``df.attrs["fronts"]``).
    Returns:
        Columns ``chosen_on``, ``evaluated_on``, ``budget_ms``, ``predicted_latency_ms``, ``measured_latency_ms``,
        ``budget_ratio``, ``over_budget_pct``, ``unused_budget_pct``, ``quality``, ``own_quality``,
        ``quality_regret``, ``same_architecture``. ``df.attrs`` holds per device the choice, op mix and breakdown
        (``devices``), how quality is measured (``quality_measure``) and the method (``method``).
    """
    ctx = ctx or Context(1, 128)
    if not budget_ms > 0:
        raise CompareError(f"--budget-ms must be positive, got {budget_ms}")
    kind = run_kind(Path(run) if run else None, space)
    devices = load_devices(profiles, space, ctx)
    chooser = Chooser(kind, Path(run) if run else None, seed)
    front_budgets = sorted({round(budget_ms * f, 6) for f in fronts})
    front_lines: dict[str, list[dict]] = {}
    for d in devices:
        (fastest, _), _ = d.cost.extremes()
        d.choice = {"fastest_ms": fastest, "feasible": budget_ms >= fastest, "arch": None, "quality": None}
        if not d.choice["feasible"]:
            d.choice["note"] = (f"budget {budget_ms:g} ms is below the fastest {space} architecture on {d.name} "
                                f"({fastest:.3f} ms predicted)")
        wanted = [b for b in front_budgets if b >= fastest]
        if d.choice["feasible"]:
            wanted = sorted(set(wanted) | {budget_ms})
        got = dict(zip(wanted, chooser(d, wanted)))
        front_lines[d.name] = [{"budget_ms": b, "predicted_latency_ms": d.cost.value(d.space.indices(g["arch"])),
                                "quality": g["quality"]} for b, g in got.items() if g is not None]
        if not d.choice["feasible"]:
            continue
        if got.get(budget_ms) is None:
            d.choice.update(feasible=False, note=f"nothing the {kind} choice can reach meets {budget_ms:g} ms on "
                                                 f"{d.name} (fastest {fastest:.3f} ms)")
            continue
        d.choice.update(got[budget_ms])
        arch = got[budget_ms]["arch"]
        d.choice.update(predicted_latency_ms=d.cost.value(d.space.indices(arch)), op_mix=op_mix(d.space, arch),
                        breakdown_ms=breakdown(d, arch, ctx), params=d.space.params(arch))
    measured = _measure(devices, ctx) if measure else {}
    rows = []
    for a in devices:
        if not a.choice["feasible"]:
            continue
        arch = a.choice["arch"]
        for b in devices:
            pred = b.cost.value(b.space.indices(arch))
            own = b.choice.get("quality") if b.choice["feasible"] else None
            rows.append({
                "chosen_on": a.name, "evaluated_on": b.name, "budget_ms": budget_ms, "predicted_latency_ms": pred,
                "measured_latency_ms": measured.get((a.name, b.name)), "budget_ratio": pred / budget_ms,
                "over_budget_pct": max(0.0, 100 * (pred / budget_ms - 1)),
                "unused_budget_pct": max(0.0, 100 * (1 - pred / budget_ms)),
                "quality": a.choice["quality"], "own_quality": own,
                # what leaving budget unused costs against b's own choice (over the budget, the regret is the excess)
                "quality_regret": (own - a.choice["quality"]) if own is not None and pred <= budget_ms else None,
                "same_architecture": b.choice.get("arch") is not None and b.choice["arch"] == arch,
                "arch_json": json.dumps(arch.to_dict()),
            })
    df = pd.DataFrame(rows)
    df.attrs.update({
        "space": space, "budget_ms": budget_ms, "batch": ctx.batch, "seq_len": ctx.seq_len, "method": METHOD[kind],
        "quality_measure": QUALITY[kind], "run": str(run) if run else None,
        "devices": {d.name: _public(d) for d in devices}, "fronts": front_lines,
    })
    return df


def _public(d: Device) -> dict:
    c = dict(d.choice)
    if c.get("arch") is not None:
        c["arch"] = c["arch"].to_dict()
    meta = d.prof.meta
    c.update({"profile": str(d.prof.path), "backend": meta.get("backend", {}).get("name"),
              "threads": meta.get("backend", {}).get("threads"), "cpu": meta.get("device", {}).get("cpu_model"),
              "device": meta.get("backend", {}).get("device", "cpu"), "gpu": meta.get("device", {}).get("gpu"),
              "measured_here": d.here})
    return c


def _measure(devices: list[Device], ctx: Context) -> dict:
    """Measured ms per (chosen on, evaluated on) for every device that is this machine."""
    from latency.backends.base import get_backend
    from nas.adabert.measure import measure_models, same_device

    out = {}
    archs = {d.name: d.choice["arch"] for d in devices if d.choice.get("arch") is not None}
    for d in devices:
        meta = d.prof.meta.get("backend", {})
        try:
            be = get_backend(meta.get("name", "onnxruntime"), threads=int(meta.get("threads", 1)),
                             device=meta.get("device", "cpu"))
        except HwnasError as e:  # a backend this machine lacks: not this device
            log.info("%s: not measured here (%s)", d.name, e)
            continue
        try:
            d.here = not same_device(d.prof, be)
        finally:
            be.close()
        if not d.here or not archs:
            continue
        stats, diffs = measure_models(d.prof, ctx, {}, archs=archs)
        if diffs:
            d.here = False
            continue
        out.update({(a, d.name): s["latency_p50_ms"] for a, s in stats.items()})
    return out


__all__ = ["compare", "CompareError", "load_devices", "op_mix", "breakdown", "Device", "run_kind"]
