"""Latency predictors: (architecture, Context) -> milliseconds of the whole exported model on a profiled device.

Every predictor is a sum of per-op effective costs plus a per-model overhead, so the same numbers feed
``predict`` and the loss's :class:`~latency.loss.CostModel` (one-hot weights reproduce ``predict`` exactly).
Kinds, by what gives the per-op ms and which corrections sit on top:

* ``lut``: the profile's table (log-log interpolated between grid Contexts): the classic lookup table.
* ``lut+calibration``: the table corrected by a linear model fitted on whole-model ``calibration`` rows
  (:mod:`latency.calibration`): ``alpha(ctx) * op_ms + beta_kind(ctx)`` per op, ``gamma(ctx)`` per model.
* ``regression``: a per-op model over op features (:mod:`latency.regression`), for widths and Contexts the
  table lacks; ``regression+calibration`` adds the same calibration.
* ``auto+calibration`` (the default): per space, whichever of the two calibrated kinds cross-validates better on
  the calibration rows (:func:`fit`); the regression unless the table's error is :data:`TABLE_MARGIN` lower.
* ``...+transfer``: a few-shot layer fitted on another device's whole-model rows (``hwnas fit --from``).

>>> from nas.spaces import Context
>>> p = load_predictor("profiles/mycpu")          # doctest: +SKIP
>>> p.predict(arch, Context(1, 128))              # doctest: +SKIP
3.41
"""
from __future__ import annotations

import abc
import dataclasses
import json
import logging
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from latency.calibration import FULL, Calibration, CalibrationSpec, Row, fit_calibration
from latency.loss import ColdTerm, CostModel, build_cost_model
from latency.lut import OpTable
from latency.profile_data import PredictorError, ProfileData, data_hash, profile_hash, read_profile
from latency.regression import OpRegressor
from nas.spaces.base import SearchSpace, factors_bag, get_space
from nas.spaces.ops import Context, OpSpec, weights_mb, weights_read_mb

log = logging.getLogger(__name__)

SCHEMA = "hwnas.predictor/1"
AUTO = "auto+calibration"
KINDS = ("lut", "lut+calibration", "regression", "regression+calibration", AUTO)
DEFAULT_KIND = AUTO  # chosen by measured accuracy: see README "Predictors"
TABLE_MARGIN = 0.02  # auto: a space takes the table only when its calibration's cross-validated error is this much
# (relative) below the regression's; on a tie the regression, which also covers widths and Contexts the table lacks
AUTO_MIN_ARCHS = 8  # auto: fewer calibration architectures in a space than this and it keeps the regression (leaving
# one of 4 out is too noisy to choose between two fits: on the demo's quick profile the table won that way and lost
# on the held-out rows)
FAR_FACTOR = {"lut": 2.0, "regression": 4.0}  # beyond this factor outside the grid, refuse to extrapolate
MAX_MARGIN = 0.10  # aimed_window: the most of a budget a search leaves for the predictor's own error


def aim(window: tuple[float, float], under: float | None) -> tuple[float, float]:
    """``window`` (fractions of a budget a search aims its predicted latency at) moved down, keeping its width,
    until its top leaves at least ``under`` of the budget (capped at :data:`MAX_MARGIN`), so that a model chosen by a
    predictor that reads that much low still meets the budget when measured. ``None`` leaves it as it is.

    >>> [round(v, 3) for v in aim((0.935, 0.985), 0.04)]  # a predictor that reads up to 4 % low
    [0.91, 0.96]
    >>> aim((0.935, 0.985), 0.01), aim((0.935, 0.985), None)  # the window's own margin already covers it
    ((0.935, 0.985), (0.935, 0.985))
    >>> [round(v, 3) for v in aim((0.935, 0.985), 0.3)]
    [0.85, 0.9]
    """
    lo, hi = window
    if under is None:
        return lo, hi
    top = 1.0 - min(MAX_MARGIN, max(0.0, under))
    return (lo, hi) if hi <= top else (lo - (hi - top), top)


class Predictor(abc.ABC):
    """Interface: ``predict(arch, ctx) -> ms`` and ``cost_matrix(space, ctx) -> CostModel``.

    Subclasses give per-op effective costs and the per-model overhead for one space and Context.
    """

    kind: str = ""

    def __init__(self, spaces: list[dict], grid: dict[str, list[int]], profile: str, meta: dict | None = None):
        self.spaces = spaces  # [{name, preset, version, num_labels}] the predictor covers
        self.grid = {"batch": sorted(grid["batch"]), "seq_len": sorted(grid["seq_len"])}  # measured Contexts
        self.profile = profile  # profile_hash of the device/backend/protocol it was fitted on
        self.meta = meta or {}  # informative: profile name, backend, fit details
        # the backend computes a parameter-free op once per tensor however often the graph repeats it (onnxruntime's
        # common-subexpression elimination); stored in predictor.json, absent (False) in files fitted before it
        self.cse = bool(self.meta.get("cse", False))
        self._spaces: dict[str, SearchSpace] = {}
        self._factors: dict[str, list] = {}

    # -- what subclasses provide -------------------------------------------------------------------------
    @abc.abstractmethod
    def op_costs(self, space: str, specs: list[OpSpec], ctx: Context) -> np.ndarray:
        """Effective ms ``(len(specs),)`` of one run of each op inside a model of ``space`` at ``ctx``."""

    @abc.abstractmethod
    def overhead_ms(self, space: str, ctx: Context, weights_mb: float = 0.0) -> float:
        """Per-model ms not attributed to any op, for a model reading ``weights_mb`` MB of weights per run."""

    def knees_mb(self, space: str) -> list[float]:
        """Where per-model costs of the weights (the cold-weights term) change slope: none by default."""
        return []

    @abc.abstractmethod
    def body(self) -> dict:
        """The fitted parts, as plain JSON."""

    far_factor: float = 2.0

    @property
    def speed(self) -> float:
        """This machine's speed now against the profile's (``meta.speed.factor``, written by ``hwnas recheck
        --apply``): every op cost and the overhead are multiplied by it, so predictions and the search's cost
        tensors follow the machine's drift. 1 when never rechecked; a refit drops it."""
        return float((self.meta.get("speed") or {}).get("factor", 1.0))

    def set_speed(self, check: dict, when: str) -> None:
        """Carry a :func:`latency.measure.recheck` result (its ``factor``) from now on."""
        self.meta["speed"] = {"factor": round(float(check["factor"]), 5), "checked": when, "rows": check["n"],
                              "median_abs_diff_pct": check.get("median_abs_diff_pct"),
                              "factor_se_pct": check.get("factor_se_pct"),
                              "how": "median of now / profile over the profile's test rows re-measured by one "
                                     "`hwnas measure` call each (`hwnas recheck --apply`)"}

    def far_factor_of(self, space: str | None) -> float:
        """How far outside the grid (a factor) predictions for ``space`` may extrapolate."""
        return self.far_factor

    def under_q90(self, space: str) -> float | None:
        """How low this predictor reads on architectures it was not fitted on: 9 in 10 of them measure at most this
        fraction of their latency above the prediction (``cv_under_q90`` of the calibration, held out by whole
        architectures). None when not known (no calibration, or fitted before it was recorded)."""
        return None

    def aimed_window(self, space: str, window: tuple[float, float]) -> tuple[float, float]:
        """The fractions of a budget a search in ``space`` aims its predicted latency at: :func:`aim` of ``window``
        by this predictor's :meth:`under_q90`."""
        return aim(window, self.under_q90(space))

    # -- coverage checks ---------------------------------------------------------------------------------
    def cover(self, name: str) -> dict:
        for s in self.spaces:
            if s["name"] == name:
                return s
        raise PredictorError(f"the profile does not cover space {name!r} (it covers "
                             f"{[s['name'] for s in self.spaces]}); profile it with `hwnas profile --space {name}`")

    def space(self, name: str, preset: str | None = None, version: int | None = None) -> SearchSpace:
        """The covered space instance; raises when the preset or version differs from the fitted one."""
        c = self.cover(name)
        if preset is not None and c["preset"] is not None and preset != c["preset"]:
            raise PredictorError(f"the profile covers {name!r} preset {c['preset']!r}, not {preset!r}; profile "
                                 f"that preset (`hwnas profile --space {name} --preset {preset}`)")
        sp = self._spaces.get(name) or get_space(name, c["preset"])
        self._spaces[name] = sp
        if sp.version != c["version"]:
            raise PredictorError(f"the predictor was fitted on space {name!r} version {c['version']}, this hwnas "
                                 f"has version {sp.version}; re-profile and refit (`hwnas fit PROFILE`)")
        if version is not None and version != sp.version:
            raise PredictorError(f"architecture is for {name!r} version {version}, the predictor for version "
                                 f"{sp.version}; re-sample the architecture")
        return sp

    def check_context(self, ctx: Context, space: SearchSpace | None = None) -> list[str]:
        """Warnings for a Context outside the measured grid; raises when it is far outside or invalid."""
        if ctx.batch < 1 or ctx.seq_len < 1:
            raise PredictorError(f"batch and seq_len must be positive, got batch {ctx.batch}, seq_len {ctx.seq_len}")
        max_len = getattr(getattr(space, "preset", None), "max_len", None)
        if max_len is not None and ctx.seq_len > max_len:
            raise PredictorError(f"seq_len {ctx.seq_len} exceeds the space's position embeddings ({max_len}); "
                                 f"use --seq-len <= {max_len}")
        out, far = [], self.far_factor_of(getattr(space, "name", None))
        for axis, v in (("batch", ctx.batch), ("seq_len", ctx.seq_len)):
            g = self.grid[axis]
            if v > far * g[-1] or v * far < g[0]:
                raise PredictorError(
                    f"{axis} {v} is far outside the profile's measured {axis} {g[0]}..{g[-1]} (more than {far:g}x); "
                    f"the {self.kind} predictor will not extrapolate that far - add it to the grid "
                    f"(`hwnas profile --{axis.replace('_', '-')} ...,{v}`) and refit")
            if not g[0] <= v <= g[-1]:
                out.append(f"{axis} {v} is outside the profile's measured {axis} {g[0]}..{g[-1]}: extrapolated, "
                           f"expect larger errors")
        for w in out:
            log.warning(w)
        return out

    # -- predictions ---------------------------------------------------------------------------------------
    def _cost_factors(self, sp: SearchSpace):
        if sp.name not in self._factors:
            self._factors[sp.name] = sp.cost_factors(self.cover(sp.name)["num_labels"], self.cse)
        return self._factors[sp.name]

    def arch_bag(self, arch) -> tuple[SearchSpace, dict[OpSpec, int]]:
        """The covered space and the ops ``arch`` runs on this backend, with multiplicity."""
        sp = self.space(arch.space, arch.preset, arch.version)
        return sp, factors_bag(self._cost_factors(sp), sp.runs_as(sp.indices(arch)))

    def predict(self, arch, ctx: Context) -> float:
        """Milliseconds of ``arch`` run whole at ``ctx`` on the profiled device and backend."""
        sp, bag = self.arch_bag(arch)
        self.check_context(ctx, sp)
        specs = sorted(bag, key=lambda s: s.key)
        costs = self.op_costs(sp.name, specs, ctx)
        ops_ms = sum(bag[s] * float(c) for s, c in zip(specs, costs))
        return float(self.overhead_ms(sp.name, ctx, weights_mb(bag)) + ops_ms)

    def cost_matrix(self, space: SearchSpace, ctx: Context) -> CostModel:
        """The :class:`CostModel` of ``space`` at ``ctx`` for the differentiable loss (float64 tensors)."""
        sp = self.space(space.name, space.preset.name)
        self.check_context(ctx, sp)
        specs = sorted(sp.unique_ops(self.cover(sp.name)["num_labels"]), key=lambda s: s.key)
        per = dict(zip(specs, (float(c) for c in self.op_costs(sp.name, specs, ctx))))
        num_labels = self.cover(sp.name)["num_labels"]
        base = self.overhead_ms(sp.name, ctx)
        cost = build_cost_model(sp, per.__getitem__, num_labels, overhead=base, cse=self.cse)
        knees = sorted({0.0, *self.knees_mb(sp.name)})
        if len(knees) > 1:  # piecewise linear in the weights, breaking at the knees: exact at these knots
            knots = (*knees, knees[-1] + 1.0)
            cost.cold = ColdTerm(build_cost_model(sp, weights_read_mb, num_labels, unit="MB"), knots,
                                 tuple(self.overhead_ms(sp.name, ctx, w) - base for w in knots))
        return cost

    # -- files -----------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        import sklearn

        from nas import __version__

        return {
            "schema": SCHEMA, "kind": self.kind, "profile": self.profile, "spaces": self.spaces, "grid": self.grid,
            "meta": self.meta, **self.body(),
            "versions": {"hwnas": __version__, "numpy": np.__version__, "scikit-learn": sklearn.__version__,
                         "python": platform.python_version()},
        }

    def save(self, path: str | os.PathLike) -> Path:
        from nas.io import atomic_write_text

        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n")


def _base_type(base: OpTable | OpRegressor) -> str:
    return "regression" if isinstance(base, OpRegressor) else "lut"


@dataclasses.dataclass
class PerSpaceBase:
    """Per space, the table or the regression (an ``auto+calibration`` predictor): ``choice`` maps each space to
    ``"lut"`` or ``"regression"``; only the bases some space uses are kept."""

    choice: dict[str, str]
    bases: dict[str, OpTable | OpRegressor]

    def of(self, space: str | None) -> OpTable | OpRegressor:
        if space not in self.choice:
            raise PredictorError(f"the {AUTO} predictor chose no per-op base for space {space!r}; refit with "
                                 f"`hwnas fit`")
        return self.bases[self.choice[space]]

    def to_dict(self) -> dict:
        return {"type": "per_space", "choice": dict(sorted(self.choice.items())),
                **{t: {"type": t, **b.to_dict()} for t, b in sorted(self.bases.items())}}

    @staticmethod
    def from_dict(d: dict) -> PerSpaceBase:
        choice = {str(k): str(v) for k, v in d["choice"].items()}
        used = set(choice.values())
        bad = sorted((used - {"lut", "regression"}) | (used - set(d)))
        if bad:
            raise PredictorError(f"predictor.json: per-space base names {bad}, which it does not hold; refit with "
                                 f"`hwnas fit`")
        return PerSpaceBase(choice, {t: _base_from_dict(d[t]) for t in used})


def _base_from_dict(d: dict) -> OpTable | OpRegressor | PerSpaceBase:
    if d["type"] == "per_space":
        return PerSpaceBase.from_dict(d)
    return OpTable.from_dict(d) if d["type"] == "lut" else OpRegressor.from_dict(d)


class OpPredictor(Predictor):
    """Per-op base costs (table or regression, or one of them per space) followed by zero or more calibration
    layers."""

    def __init__(self, kind: str, base: OpTable | OpRegressor | PerSpaceBase, layers: list[Calibration],
                 **kw: Any) -> None:
        super().__init__(**kw)
        self.kind, self.base, self.layers = kind, base, layers
        self.far_factor = min(FAR_FACTOR[_base_type(b)] for b in self._bases())
        self._cache: dict[tuple, np.ndarray] = {}

    def _bases(self) -> list[OpTable | OpRegressor]:
        return list(self.base.bases.values()) if isinstance(self.base, PerSpaceBase) else [self.base]

    def far_factor_of(self, space: str | None) -> float:
        if isinstance(self.base, PerSpaceBase) and space in self.base.choice:
            return FAR_FACTOR[self.base.choice[space]]
        return self.far_factor

    def base_ms(self, specs: list[OpSpec], ctx: Context, space: str | None = None) -> np.ndarray:
        """Per-op ms of the base (``space`` picks it in a per-space base)."""
        base = self.base.of(space) if isinstance(self.base, PerSpaceBase) else self.base
        if isinstance(base, OpTable):
            return base.ms([s.key for s in specs], ctx.batch, ctx.seq_len)
        return base.ms(specs, ctx)

    def _through(self, space: str, specs: list[OpSpec], ctx: Context, upto: int) -> np.ndarray:
        ms = self.base_ms(specs, ctx, space)
        for i, layer in enumerate(self.layers[:upto]):
            harness = (self._through(space, layer.harness_specs(specs), ctx, i) if layer.needs_harness(space)
                       else None)
            ms = layer.apply_ops(space, specs, ms, ctx, harness)
        return ms

    def _overhead(self, space: str, ctx: Context, upto: int, weights_mb: float = 0.0) -> float:
        ovh = 0.0
        for layer in self.layers[:upto]:
            ovh = layer.apply_overhead(space, ovh, ctx, weights_mb)
        return ovh

    def op_costs(self, space: str, specs: list[OpSpec], ctx: Context) -> np.ndarray:
        key = (space, ctx, tuple(specs))
        if key not in self._cache:
            if len(self._cache) > 256:
                self._cache.clear()
            self._cache[key] = self._through(space, specs, ctx, len(self.layers))
        return self._cache[key] * self.speed

    def overhead_ms(self, space: str, ctx: Context, weights_mb: float = 0.0) -> float:
        return self._overhead(space, ctx, len(self.layers), weights_mb) * self.speed

    def knees_mb(self, space: str) -> list[float]:
        return [k for layer in self.layers if (k := layer.knee_mb(space)) is not None]

    def under_q90(self, space: str) -> float | None:
        q = self.layers[-1].coef.get(space, {}).get("cv_under_q90") if self.layers else None
        return None if q is None else float(q)

    def body(self) -> dict:
        schema: dict[str, Any] = {}
        if isinstance(self.base, PerSpaceBase):
            base = self.base.to_dict()
            schema["base_choice"] = "per space (choice): the table (lut) or the regression, below"
        else:
            base = {"type": _base_type(self.base), **self.base.to_dict()}
        if any(isinstance(b, OpTable) for b in self._bases()):
            schema["lut"] = "op_key x grid (batch, seq_len) -> p50 ms; log(ms) bilinear in (log batch, log seq_len)"
        for b in self._bases():
            if isinstance(b, OpRegressor):
                schema["regression"] = "log(ms) = per-kind linear(linear_features) + gradient-boosted trees(feature_names)"
                schema["feature_names"] = b.feature_names
        schema["layers"] = [layer.spec.__dict__ | {"role": layer.role} for layer in self.layers]
        return {"feature_schema": schema, "base": base, "layers": [layer.to_dict() for layer in self.layers]}

    # -- fitting -----------------------------------------------------------------------------------------------
    def add_layer(self, rows: list[Row], spec=FULL, role: str = "calibration") -> None:
        """Fit a calibration layer on ``rows`` on top of the current layers."""
        n = len(self.layers)
        if spec.grid is None and any("hat" in b for b in (spec.alpha, spec.beta, spec.gamma)):
            spec = dataclasses.replace(spec, grid=(tuple(self.grid["batch"]), tuple(self.grid["seq_len"])))
        ctxs = sorted({r.ctx for r in rows} | {Context(b, s) for b in self.grid["batch"] for s in self.grid["seq_len"]})

        def accept(space: str, trial: Calibration) -> bool:
            """The fastest architecture of the space stays above 0 ms at every Context fitted or measured."""
            probe = OpPredictor(self.kind, self.base, [*self.layers, trial], spaces=self.spaces, grid=self.grid,
                                profile=self.profile)
            sp = self.space(space)
            return all(probe.cost_matrix(sp, c).extremes()[0][0] > 0 for c in ctxs
                       if c.seq_len <= getattr(sp.preset, "max_len", c.seq_len))

        layer = fit_calibration(rows, lambda sp, specs, c: self._through(sp, specs, c, n),
                                lambda sp, c, w: self._overhead(sp, c, n, w), spec, role, accept)
        self.layers.append(layer)
        self._cache.clear()


def predictor_from_dict(d: Any, source: str = "predictor.json") -> Predictor:
    """Rebuild a predictor from its JSON (checks schema, kind and space versions)."""
    if not isinstance(d, dict) or d.get("schema") != SCHEMA:
        raise PredictorError(f"{source}: not an hwnas predictor ({SCHEMA}); refit with `hwnas fit PROFILE`")
    try:
        base = _base_from_dict(d["base"])
        layers = [Calibration.from_dict(x) for x in d["layers"]]
        p = OpPredictor(d["kind"], base, layers, spaces=d["spaces"], grid=d["grid"], profile=d["profile"],
                        meta=d.get("meta", {}))
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, PredictorError):
            raise
        raise PredictorError(f"{source}: malformed predictor file ({type(e).__name__}: {e}); refit with "
                             f"`hwnas fit PROFILE`") from None
    for s in p.spaces:
        try:
            p.space(s["name"])
        except PredictorError as e:
            raise PredictorError(f"{source}: {e}") from None
    from latency.measure import RECHECK_MAX, speed_in_bounds

    speed = p.meta.get("speed")
    speed = speed.get("factor", 1.0) if isinstance(speed, dict) else 1.0 if speed is None else speed
    if not isinstance(speed, (int, float)) or not speed_in_bounds(speed):
        raise PredictorError(f"{source}: speed factor {speed!r} is not a recheck's (within {RECHECK_MAX:.0%} of 1); "
                             f"recheck with `hwnas recheck PROFILE --apply` or refit with `hwnas fit`")
    return p


def load_predictor(path: str | os.PathLike, profile: ProfileData | None = None) -> Predictor:
    """Load ``predictor.json`` (a file, or a profile folder holding one); check it belongs to that profile."""
    p = Path(path)
    f = p / "predictor.json" if p.is_dir() else p
    if not f.is_file():
        raise PredictorError(f"{f}: no predictor; fit one with `hwnas fit {p if p.is_dir() else p.parent}`")
    try:
        d = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise PredictorError(f"{f}: not valid JSON ({e.msg}); refit with `hwnas fit`") from None
    pred = predictor_from_dict(d, str(f))
    if profile is None and p.is_dir() and (p / "profile.json").is_file():
        profile = read_profile(p, need_ops=False)
    if profile is not None and pred.profile != profile_hash(profile.meta):
        raise PredictorError(f"{f} was fitted on another device/backend/protocol than {profile.path}; refit with "
                             f"`hwnas fit {profile.path}`")
    if profile is not None and pred.meta.get("data_hash") not in (None, data_hash(profile.path)):
        raise PredictorError(f"{f} was fitted before {profile.path}'s tables last changed; refit with "
                             f"`hwnas fit {profile.path}`")
    return pred


def e2e_rows(pred: Predictor, profile: ProfileData, split: str) -> list[Row]:
    """Whole-model rows of a split as calibration rows (architectures parsed and checked)."""
    from nas.arch import Architecture

    rows = []
    df = profile.e2e_split(split)
    for i, r in df.iterrows():
        arch = Architecture.from_json(r["arch_json"], f"{profile.path}/e2e.csv row {i}")
        _, bag = pred.arch_bag(arch)
        rows.append(Row(arch.space, Context(int(r["batch"]), int(r["seq_len"])), bag, float(r["latency_p50_ms"]),
                        arch.key))
    return rows


def merges_common_ops(backend: dict) -> bool:
    """Whether a backend (profile.json's ``backend``) runs a parameter-free op repeated on one tensor once.

    True for onnxruntime: the exported ONNX graph already holds each such op once (the exporter eliminates common
    subexpressions; tested by counting the graph's pooling nodes), and onnxruntime's optimiser would merge them
    too. False for eager PyTorch, which runs every call.
    """
    return backend.get("name") == "onnxruntime"


def fit(profile: str | os.PathLike | ProfileData, kind: str | None = None, seed: int = 0,
        spec: CalibrationSpec = FULL) -> Predictor:
    """Fit a predictor of ``kind`` (default :data:`DEFAULT_KIND`) on a profile folder.

    Calibration uses only the ``calibration`` split of ``e2e.csv``; the ``test`` split is for evaluation.

    >>> p = fit("profiles/mycpu", "lut+calibration")   # doctest: +SKIP
    """
    kind = kind or DEFAULT_KIND
    if kind not in KINDS:
        raise PredictorError(f"unknown predictor kind {kind!r}; choose one of {', '.join(KINDS)}")
    prof = profile if isinstance(profile, ProfileData) else read_profile(profile)
    if kind == AUTO:
        return _fit_auto(prof, seed, spec)
    b, s = prof.grid()
    if kind.startswith("lut"):
        base: OpTable | OpRegressor = OpTable.from_frame(prof.ops, f"{prof.path}/ops.csv")
    else:
        base = OpRegressor.fit(prof.ops, seed=seed)
    backend = prof.meta.get("backend", {})
    meta = {"profile_name": prof.name, "backend": backend, "seed": seed, "data_hash": data_hash(prof.path),
            "cse": merges_common_ops(backend)}
    pred = OpPredictor(kind, base, [], spaces=prof.spaces(), grid={"batch": b, "seq_len": s},
                       profile=profile_hash(prof.meta), meta=meta)
    if kind.endswith("+calibration"):
        rows = e2e_rows(pred, prof, "calibration")
        pred.add_layer(rows, spec)
        pred.meta["calibration_rows"] = len(rows)
    return pred


def _fit_auto(prof: ProfileData, seed: int, spec: CalibrationSpec) -> OpPredictor:
    """Both calibrated kinds; per space the base whose calibration layer has the lower cross-validated error
    (leave-one-architecture-out, on the calibration rows only), the regression unless the table's is
    :data:`TABLE_MARGIN` lower and the space has :data:`AUTO_MIN_ARCHS` calibration architectures. The space keeps
    that kind's coefficients, which were fitted on that base."""
    fitted = {t: fit(prof, f"{t}+calibration", seed, spec) for t in ("lut", "regression")}
    layers = {t: p.layers[-1] for t, p in fitted.items()}
    reg = fitted["regression"]
    cal = prof.e2e_split("calibration")
    archs = cal.groupby("space")["arch_json"].nunique().to_dict() if len(cal) else {}
    choice, why = {}, {}
    for s in reg.spaces:
        name = s["name"]
        err = {t: layers[t].coef.get(name, {}).get("cv_error") for t in layers}
        if err["lut"] is None or err["regression"] is None:
            choice[name] = "regression"
            continue
        enough = archs.get(name, 0) >= AUTO_MIN_ARCHS
        choice[name] = "lut" if enough and err["lut"] < (1 - TABLE_MARGIN) * err["regression"] else "regression"
        why[name] = {"base": choice[name], "cv_error_lut": err["lut"], "cv_error_regression": err["regression"],
                     "calibration_archs": int(archs.get(name, 0))}
    coef = {name: layers[t].coef[name] for name, t in choice.items() if name in layers[t].coef}
    layer = Calibration(layers["regression"].role, layers["regression"].spec, coef)
    base = PerSpaceBase(choice, {t: fitted[t].base for t in set(choice.values())})
    meta = {**reg.meta, "base_choice": why}
    return OpPredictor(AUTO, base, [layer], spaces=reg.spaces, grid=reg.grid, profile=reg.profile, meta=meta)


__all__ = ["aim", "Predictor", "OpPredictor", "PerSpaceBase", "fit", "load_predictor", "predictor_from_dict", "e2e_rows", "KINDS", "AUTO",
           "DEFAULT_KIND"]
