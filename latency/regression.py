"""Per-op latency regression: covers hidden sizes and Contexts the table never measured.

Two stages on log(ms), both fitted on ``ops.csv``:

1. a per-kind physical model ``ms ~ c0 + c1 batch + c2 tokens + c3 FLOPs + c4 bytes`` (non-negative least
   squares on relative error: launch cost, per-sequence and per-token overheads, compute, memory traffic), smooth,
   so it interpolates between grid Contexts and across widths;
2. scikit-learn's ``GradientBoostingRegressor`` (fixed seed, no subsampling: deterministic) on the residual
   log(ms / model), over the op features (kind one-hot, parameters, hidden, batch, seq_len, log FLOPs, log bytes).

The fitted trees are exported to plain lists (children, feature, threshold, leaf value) and evaluated here with
numpy, so ``predictor.json`` holds no pickle and does not depend on scikit-learn's internals to load; at fit time
the exported trees are checked against scikit-learn's own predictions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from latency.profile_data import PredictorError
from nas.spaces.ops import OP_REGISTRY, Context, OpSpec, op_bytes, op_flops

LINEAR_FEATURES = ("one", "batch", "ktokens", "mflops", "mbytes")  # terms of the per-kind physical model
GBR_PARAMS = {"n_estimators": 300, "max_depth": 3, "learning_rate": 0.05, "subsample": 1.0, "min_samples_leaf": 2}
MIN_MS = 1e-6


def param_names() -> list[str]:
    """Every op parameter name in the vocabulary, sorted (one feature column each)."""
    return sorted({p for kind in OP_REGISTRY.values() for p in kind.required})


def _linear_row(spec: OpSpec, ctx: Context) -> list[float]:
    return [1.0, float(ctx.batch), ctx.tokens / 1e3, op_flops(spec, ctx) / 1e6, op_bytes(spec, ctx) / 1e6]


def _tree_row(spec: OpSpec, ctx: Context, kinds: list[str], params: list[str]) -> list[float]:
    pd_ = dict(spec.params)
    return ([1.0 if spec.kind == k else 0.0 for k in kinds] + [float(pd_.get(p, 0)) for p in params]
            + [float(spec.hidden), float(ctx.batch), float(ctx.seq_len),
               math.log1p(op_flops(spec, ctx)), math.log1p(op_bytes(spec, ctx))])


def _tree_predict(tree: dict, x: np.ndarray) -> np.ndarray:
    """Leaf values of a regression tree for rows ``x`` ``(n, f)`` (float32-rounded, as scikit-learn compares)."""
    left, right = np.asarray(tree["left"]), np.asarray(tree["right"])
    feat, thr, val = np.asarray(tree["feature"]), np.asarray(tree["threshold"]), np.asarray(tree["value"])
    node = np.zeros(len(x), dtype=np.int64)  # (n,)
    while True:
        inner = left[node] >= 0
        if not inner.any():
            return val[node]
        go_left = x[np.arange(len(x)), np.maximum(feat[node], 0)] <= thr[node]
        node = np.where(inner, np.where(go_left, left[node], right[node]), node)


@dataclass
class OpRegressor:
    """Fitted two-stage per-op model; ``ms(specs, ctx)`` gives each op's predicted p50 ms."""

    kinds: list[str]  # op kinds seen in training (one-hot columns, in this order)
    params: list[str]  # op parameter columns
    linear: dict[str, list[float]]  # kind -> non-negative coefficients (ms) over LINEAR_FEATURES
    init: float  # the boosting's constant start
    learning_rate: float
    trees: list[dict] = field(default_factory=list)  # {left, right, feature, threshold, value} per tree
    seed: int = 0

    @property
    def feature_names(self) -> list[str]:
        return ([f"kind={k}" for k in self.kinds] + [f"param.{p}" for p in self.params]
                + ["hidden", "batch", "seq_len", "log_flops", "log_bytes"])

    def _tree_x(self, specs: list[OpSpec], ctx_list: list[Context]) -> np.ndarray:
        x = np.array([_tree_row(s, c, self.kinds, self.params) for s, c in zip(specs, ctx_list)])  # (n, f)
        return x.astype(np.float32).astype(np.float64)

    def _log_ms(self, specs: list[OpSpec], ctx_list: list[Context]) -> np.ndarray:
        for s in specs:
            if s.kind not in self.linear:
                raise PredictorError(f"op kind {s.kind!r} ({s.key}) was never measured in this profile; the "
                                     f"regression covers kinds {self.kinds} - profile a space that uses it")
        lin = np.log(np.maximum([np.dot(self.linear[s.kind], _linear_row(s, c)) for s, c in zip(specs, ctx_list)],
                                MIN_MS))  # (n,)
        x = self._tree_x(specs, ctx_list)  # (n, f)
        boost = np.full(len(specs), self.init)  # (n,)
        for tree in self.trees:
            boost += self.learning_rate * _tree_predict(tree, x)
        return lin + boost

    def ms(self, specs: list[OpSpec], ctx: Context) -> np.ndarray:
        """Predicted p50 ms of each op at ``ctx``: array ``(len(specs),)``."""
        if not specs:
            return np.zeros(0)
        return np.exp(self._log_ms(list(specs), [ctx] * len(specs)))

    @staticmethod
    def fit(ops: pd.DataFrame, seed: int = 0) -> OpRegressor:
        """Fit on ``ops.csv`` rows (p50 ms), deterministically for a given seed and table."""
        from scipy.optimize import nnls
        from sklearn.ensemble import GradientBoostingRegressor

        ops = ops.sort_values(["op_key", "batch", "seq_len"]).reset_index(drop=True)
        specs = [OpSpec.parse(k) for k in ops["op_key"]]
        ctxs = [Context(int(b), int(s)) for b, s in zip(ops["batch"], ops["seq_len"])]
        ms = np.maximum(ops["latency_p50_ms"].to_numpy(dtype=np.float64), MIN_MS)  # (n,)
        kinds = sorted({s.kind for s in specs})
        lin_x = np.array([_linear_row(s, c) for s, c in zip(specs, ctxs)])  # (n, 5)
        linear, resid, lin_log = {}, np.empty_like(ms), np.empty_like(ms)
        for k in kinds:
            rows = np.array([s.kind == k for s in specs])
            a = lin_x[rows] / ms[rows, None]  # (n_k, 5): relative error
            scale = np.abs(a).max(0)
            scale[scale == 0] = 1.0
            coef = nnls(a / scale, np.ones(int(rows.sum())))[0] / scale  # (5,)
            linear[k] = [float(c) for c in coef]
            lin_log[rows] = np.log(np.maximum(lin_x[rows] @ coef, MIN_MS))
            resid[rows] = np.log(ms[rows]) - lin_log[rows]
        model = OpRegressor(kinds, param_names(), linear, 0.0, GBR_PARAMS["learning_rate"], [], seed)
        x = model._tree_x(specs, ctxs)  # (n, f)
        gbr = GradientBoostingRegressor(random_state=seed, **GBR_PARAMS).fit(x, resid)
        model.init = float(gbr.init_.constant_.ravel()[0]) if hasattr(gbr.init_, "constant_") else float(resid.mean())
        for est in gbr.estimators_[:, 0]:
            t = est.tree_
            model.trees.append({
                "left": [int(v) for v in t.children_left], "right": [int(v) for v in t.children_right],
                "feature": [int(v) for v in t.feature], "threshold": [float(v) for v in t.threshold],
                "value": [float(v) for v in t.value[:, 0, 0]],
            })
        ours = model._log_ms(specs, ctxs) - lin_log
        if not np.allclose(ours, gbr.predict(x), rtol=0, atol=1e-9):  # pragma: no cover - a scikit-learn change
            raise PredictorError("exported gradient-boosting trees disagree with scikit-learn; report this bug")
        return model

    def to_dict(self) -> dict:
        return {"kinds": self.kinds, "params": self.params, "feature_names": self.feature_names,
                "linear_features": list(LINEAR_FEATURES), "linear": self.linear, "init": self.init,
                "learning_rate": self.learning_rate, "gbr_params": dict(GBR_PARAMS), "seed": self.seed,
                "trees": self.trees}

    @staticmethod
    def from_dict(d: dict) -> OpRegressor:
        if list(d.get("linear_features", [])) != list(LINEAR_FEATURES):
            raise PredictorError("predictor.json: regression features differ from this hwnas version; "
                                 "refit with `hwnas fit PROFILE --kind regression`")
        return OpRegressor(list(d["kinds"]), list(d["params"]), {k: list(v) for k, v in d["linear"].items()},
                           float(d["init"]), float(d["learning_rate"]), list(d["trees"]), int(d.get("seed", 0)))
