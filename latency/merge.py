"""One profile from several full profiles of one machine taken in separate sittings (``hwnas merge-profiles``).

A profile is one sitting: one process (or one per round), one stretch of the machine's hours. On a machine whose
speed and per-process state wander, the same whole models re-measured in another sitting agree with the first only
so far: on the Zen 5 VM, eager torch's test rows of two full profiles hours apart, with the speed between them
divided out, agreed within +-5 % on 57-81 % of rows, onnxruntime's on 86-95 % (``benchmarks/sitting_agreement.py``).
A predictor fitted on one sitting learns that sitting's state; a user's process is another sitting.

Merging takes every entry (op and whole model) of every profile, divides each profile's speed against the first
out (per table: the median of its entries over the first's, on the entries both measured), and keeps per entry the
median of the sittings' values in log space (two sittings: their geometric mean). Splits come from the first
profile that has the row, so a ``test`` row never feeds a fit. Left out, as one sitting's own: ``visits.csv``
(per-visit timings) and the retest (the first profile's is kept, each sitting's is in ``merged_from``).

Leave one sitting out on three full profiles of the Zen 5 VM (``benchmarks/sitting_agreement.py --loso``): the
predictor of the two other sittings merged, judged on the third's test rows with its speed divided out, read
within +-5 % 3-10 points more often than the two single sittings' predictors on average (torch, all six space x
held-out cases; onnxruntime -0.3 to +4.5), within +-10 % -1 to +2 points. In two paired budget-fidelity sittings
(torch, seeds 3 and 4) the merged predictor's searched models read within +-5 % of their prediction as often as
the single sitting's (85 / 85 % against 98 / 75 %), so the shipped profiles stay single sittings.
"""
from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from latency.profile_data import data_hash
from latency.table import (
    E2E_COLUMNS,
    E2E_KEY,
    OPS_COLUMNS,
    OPS_KEY,
    ProfileError,
    compat_differences,
    load_profile,
    write_meta,
)

NOISE_ONLY = ("visit_processes", "visits", "e2e_visits", "max_visits", "retake_spread", "retest", "retest_fraction",
              "retest_min", "probe")  # protocol fields that change how often or where an entry is visited, or at
# which speed of the machine its visits are counted (a constant per sitting, divided out), not what it reads
LATENCY = ("latency_p50_ms", "latency_p10_ms", "latency_p90_ms")


def _refuse_unmergeable(name: str, meta: dict) -> None:
    if meta.get("transfer_from"):
        raise ProfileError(f"{name} is a transfer profile (a few minutes of measurement, ops at some Contexts); merge "
                           f"full profiles of one machine made by `hwnas profile`")
    if meta.get("merged_from"):
        raise ProfileError(f"{name} is itself a merge of {len(meta['merged_from'])} profiles; merge the sittings it "
                           f"came from together with the new one instead (each then counts once)")
    if meta.get("status") in ("running", "partial"):
        raise ProfileError(f"{name} is {meta['status']} (not every entry measured); finish it with the same "
                           f"`hwnas profile` command before merging")


def check_mergeable(profiles: list) -> None:
    """Refuse, in one line, profiles that do not measure the same thing: another device, library version, backend,
    grid, space or measuring rule (protocol fields that only change how often an entry is visited may differ)."""
    first = profiles[0]
    for p in profiles:
        _refuse_unmergeable(str(p.path), p.meta)
    for p in profiles[1:]:
        diffs = [d for d in compat_differences(first.meta, p.meta)
                 if not any(d.startswith(f"protocol.{k} ") for k in NOISE_ONLY)]
        if diffs:
            shown = "; ".join(diffs[:3]) + (f"; and {len(diffs) - 3} more" if len(diffs) > 3 else "")
            raise ProfileError(f"{p.path} was measured under another setup than {first.path} ({shown}); merge "
                               f"profiles of one machine, libraries, backend, grid and spaces")


def speed_factor(first: pd.DataFrame, other: pd.DataFrame, key: tuple[str, ...]) -> tuple[float | None, int]:
    """How much slower ``other`` read the entries both measured than ``first`` (median ratio) and how many."""
    both = first[list(key) + ["latency_p50_ms"]].merge(other[list(key) + ["latency_p50_ms"]], on=list(key),
                                                       suffixes=("_a", "_b"))
    if both.empty:
        return None, 0
    return float(np.median(both["latency_p50_ms_b"] / both["latency_p50_ms_a"])), int(len(both))


def combine(tables: list[pd.DataFrame], factors: list[float], key: tuple[str, ...], columns: list[str]) -> pd.DataFrame:
    """Per entry: each sitting's latencies divided by its factor, then their median in log space; ``cv`` the
    median, ``n_runs`` the sum, every other column the first sitting's (that has the entry); the first table's row
    order, then entries only later ones hold."""
    parts = []
    for i, (t, f) in enumerate(zip(tables, factors)):
        t = t[columns].copy()
        for c in LATENCY:
            t[c] = np.log(t[c].astype(float) / f)
        t["_sitting"] = i
        parts.append(t)
    allrows = pd.concat(parts, ignore_index=True)
    allrows["_order"] = range(len(allrows))
    grouped = allrows.groupby(list(key), sort=False)
    out = grouped.first()  # the first sitting's columns (rows are in sitting order)
    for c in LATENCY:
        out[c] = np.exp(grouped[c].median())
    out["cv"] = grouped["cv"].median()
    out["n_runs"] = grouped["n_runs"].sum()
    out["sittings"] = grouped["_sitting"].nunique()
    out = out.reset_index().sort_values("_order", kind="stable")
    return out


def merge_profiles(paths: list[str | os.PathLike], out: str | os.PathLike) -> dict:
    """Merge the full profiles ``paths`` (two or more, of one machine) into a new profile folder ``out``.

    Returns a summary: the folder, rows, and per input its speed factors against the first and rows shared.
    Raises:
        ProfileError: fewer than two profiles, a foreign, transfer, unfinished or mismatched one, no shared
            entries, or an ``out`` that exists.
    """
    if len(paths) < 2:
        raise ProfileError("merge-profiles needs at least two profiles of one machine (separate sittings of "
                           "`hwnas profile`)")
    out = Path(out)
    profiles = [load_profile(p) for p in paths]
    resolved = {p.path.resolve() for p in profiles}
    if len(resolved) < len(profiles):
        raise ProfileError("the same profile is given twice; merge different sittings")
    if out.exists() and (not out.is_dir() or out.resolve() in resolved or any(out.iterdir())):
        raise ProfileError(f"{out} exists and is not empty; choose a new --out for the merged profile")
    check_mergeable(profiles)
    first = profiles[0]
    factors = {"ops": [1.0], "e2e": [1.0]}
    shared = {"ops": [len(first.ops)], "e2e": [len(first.e2e)]}
    for p in profiles[1:]:
        for table, key in (("ops", OPS_KEY), ("e2e", E2E_KEY)):
            f, n = speed_factor(getattr(first, table), getattr(p, table), key)
            if f is None and len(getattr(p, table)) and len(getattr(first, table)):
                raise ProfileError(f"{p.path} shares no {table} entry with {first.path}; merge profiles of the same "
                                   f"spaces, grid and --seed")
            factors[table].append(f or 1.0)
            shared[table].append(n)
    ops = combine([p.ops for p in profiles], factors["ops"], OPS_KEY, OPS_COLUMNS)
    e2e = combine([p.e2e for p in profiles], factors["e2e"], E2E_KEY, E2E_COLUMNS)
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    meta = {**first.meta, "created": now, "status": "complete",
            "sessions": [{**s, "sitting": p.name} for p in profiles for s in p.meta.get("sessions", [])],
            "merged_from": [{"name": p.name, "path": str(p.path), "created": p.meta.get("created"),
                             "data_hash": data_hash(p.path), "ops_factor": round(factors["ops"][i], 5),
                             "e2e_factor": round(factors["e2e"][i], 5), "ops_shared": shared["ops"][i],
                             "e2e_shared": shared["e2e"][i],
                             "protocol": {k: (p.meta.get("protocol") or {}).get(k) for k in NOISE_ONLY
                                          if k in (p.meta.get("protocol") or {})},
                             "retest": p.meta.get("retest")}
                            for i, p in enumerate(profiles)]}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        ops[OPS_COLUMNS].to_csv(tmp / "ops.csv", index=False)
        e2e[E2E_COLUMNS].to_csv(tmp / "e2e.csv", index=False)
        if (first.path / "roofline.csv").is_file():  # each op's bound: the same machine's, from the first sitting
            shutil.copy(first.path / "roofline.csv", tmp / "roofline.csv")
        write_meta(tmp, meta)
        load_profile(tmp)  # what was written reads back as a profile
        if out.exists():
            out.rmdir()  # empty (checked above)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"out": str(out), "ops_rows": int(len(ops)), "e2e_rows": int(len(e2e)),
            "e2e_in_every_sitting": int((e2e["sittings"] == len(profiles)).sum()),
            "sittings": [{k: m[k] for k in ("name", "created", "ops_factor", "e2e_factor", "ops_shared", "e2e_shared")}
                         for m in meta["merged_from"]]}
