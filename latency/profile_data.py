"""What the predictors read from a profile folder: its metadata, op table and whole-model rows.

:func:`read_profile` wraps the profiler's validating loader (:func:`latency.table.load_profile`) and turns its
errors into :class:`PredictorError`, so the predictors depend on one small function only. :func:`profile_hash`
identifies the device, backend and protocol a predictor was fitted on.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from latency.table import fingerprint_hash, load_profile, resolve
from nas.errors import HwnasError


class PredictorError(HwnasError, ValueError):
    """A profile, predictor file, architecture or Context that a predictor cannot use; says what to do."""


@dataclass
class ProfileData:
    """The parts of a profile folder a predictor needs."""

    path: Path  # the profile folder
    meta: dict[str, Any]  # profile.json
    ops: pd.DataFrame | None  # ops.csv (None for an e2e-only folder)
    e2e: pd.DataFrame | None  # e2e.csv (None when absent)

    @property
    def name(self) -> str:
        return self.path.name

    def grid(self) -> tuple[list[int], list[int]]:
        """(batch sizes, sequence lengths) of the op grid: from profile.json, else from ops.csv."""
        g = self.meta.get("grid") or {}
        if g.get("batch") and g.get("seq_len"):
            return sorted(int(b) for b in g["batch"]), sorted(int(s) for s in g["seq_len"])
        if self.ops is None:
            raise PredictorError(f"{self.path}: profile.json has no 'grid' and there is no ops.csv")
        return sorted(self.ops["batch"].unique().tolist()), sorted(self.ops["seq_len"].unique().tolist())

    def spaces(self) -> list[dict[str, Any]]:
        """``[{name, preset, version, num_labels}]`` the profile covers."""
        out = []
        for s in self.meta.get("spaces") or []:
            out.append({"name": s["name"], "preset": s.get("preset"), "version": int(s.get("version", 1)),
                        "num_labels": int(s.get("num_labels", 2))})
        if not out:
            raise PredictorError(f"{self.path}/profile.json lists no 'spaces'; re-run `hwnas profile` to rebuild it")
        return out

    def e2e_split(self, split: str) -> pd.DataFrame:
        """Whole-model rows of one split (``calibration`` or ``test``)."""
        if self.e2e is None or self.e2e.empty:
            raise PredictorError(f"{self.path}: no whole-model measurements (e2e.csv); run `hwnas profile --e2e N "
                                 f"--out {self.path}` to add some")
        return self.e2e[self.e2e["split"] == split].reset_index(drop=True)

    def backend_label(self) -> str:
        b = self.meta.get("backend") or {}
        return f"{b.get('name', '?')} {b.get('device', '?')} t{b.get('threads', '?')}"


def resolve_profile(path: str | os.PathLike) -> Path:
    """A profile folder as given, else the shipped profile of that name (``hwnas list profiles``)."""
    return resolve(path)


def read_profile(path: str | os.PathLike, need_ops: bool = True) -> ProfileData:
    """Load a profile folder (``profile.json``, ``ops.csv``, ``e2e.csv``), validated by the profiler's loader.

    Args:
        path: the profile folder (or a shipped profile's name).
        need_ops: raise when ``ops.csv`` is missing (an e2e-only folder is enough for few-shot transfer).
    Returns:
        The profile's metadata and tables.
    """
    p = resolve_profile(path)
    if not (p / "profile.json").is_file():
        raise PredictorError(f"{p}: not a profile folder (no profile.json); create one with "
                             f"`hwnas profile --out {p}` or pick one from `hwnas list profiles`")
    try:
        prof = load_profile(p)
    except HwnasError as e:
        raise PredictorError(str(e)) from None
    ops = None if prof.ops.empty and not (p / "ops.csv").is_file() else prof.ops
    e2e = prof.e2e
    if need_ops and (ops is None or ops.empty):
        raise PredictorError(f"{p}: no op table (ops.csv); run `hwnas profile --out {p}`, or fit a few-shot "
                             f"predictor with `hwnas fit {p} --from OTHER_PROFILE --e2e-only`")
    return ProfileData(p, prof.meta, ops, e2e)


def data_hash(folder: str | os.PathLike) -> str:
    """A short id of the profile's tables (``ops.csv`` and ``e2e.csv`` as they are on disk)."""
    h = hashlib.sha256()
    for name in ("ops.csv", "e2e.csv"):
        f = Path(folder) / name
        if f.is_file():
            h.update(name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def profile_hash(meta: dict[str, Any]) -> str:
    """A short stable id of the device, backend and protocol a profile was measured with."""
    return fingerprint_hash(meta)
