"""Reports: what an architecture is and costs (``hwnas info``). Result tables and model cards come here later.

>>> from nas.spaces import get_space
>>> info = arch_info(get_space("adabert", "tiny").sample(0), batch=1, seq_len=32)
>>> info["space"], info["params"] == info["analytic_params"]
('adabert', True)
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from typing import Any

from nas.arch import Architecture
from nas.errors import HwnasError
from nas.spaces.ops import Context, weights_mb


def _live_cells(arch: Architecture) -> int:
    """The AdaBERT cells the output depends on (the model skips the others at inference)."""
    from nas.spaces.adabert import arch_live_cells

    return sum(arch_live_cells(arch))


# Per space: the depth figures worth showing (cells for AdaBERT; layers and widths for NAS-BERT).
DEPTH: dict[str, Callable[[Architecture], dict[str, Any]]] = {
    "adabert": lambda a: {"cells": a.choices["cells"], "live_cells": _live_cells(a)},
    "nasbert": lambda a: {
        "layers": sum(1 for k in a.choices if k.startswith("layer")),
        "active_layers": sum(1 for k, v in a.choices.items() if k.startswith("layer") and v != "identity"),
        "block_hiddens": [v for k, v in a.choices.items() if k.startswith("block")],
    },
}


def arch_info(arch: Architecture | str | os.PathLike, batch: int = 1, seq_len: int = 128,
              num_labels: int = 2) -> dict[str, Any]:
    """Size and cost of an architecture at one deployment shape.

    Args:
        arch: an :class:`Architecture` or the path of an architecture file.
        batch, seq_len: the :class:`Context` the FLOPs are counted for.
        num_labels: classifier outputs.
    Returns:
        ``space``, ``preset``, ``version``, ``params`` (of the built model), ``analytic_params`` (sum over the ops
        as run), ``weights_read_mb`` (MB of float32 weights one run reads whole: all but the word table; what the
        predictor's cold-weights term is a function of), ``flops`` and ``gflops`` at ``(batch, seq_len)``,
        ``op_counts`` (ops that run, by kind, with multiplicity), the space's depth figures (``cells`` and ``live_cells``, the cells the output depends on, or
        ``layers``...) and ``choices``.
    """
    source = str(arch) if not isinstance(arch, Architecture) else None
    if source is not None:
        arch = Architecture.load(arch)
    if batch < 1 or seq_len < 1:
        raise HwnasError(f"batch and seq_len must be positive, got {batch} and {seq_len}")
    space = arch.get_space()
    ctx = Context(batch, seq_len)
    ops = space.arch_ops(arch, num_labels)
    kinds: Counter[str] = Counter()
    for spec, count in ops.items():
        kinds[spec.kind] += count
    flops = space.flops(arch, ctx, num_labels)
    params = space.params(arch, num_labels)
    info: dict[str, Any] = {"file": source} if source else {}
    info.update({
        "space": arch.space, "preset": arch.preset, "version": arch.version,
        "batch": batch, "seq_len": seq_len, "num_labels": num_labels,
        "params": params, "params_m": round(params / 1e6, 3),
        "analytic_params": space.analytic_params(arch, num_labels),
        "weights_read_mb": round(weights_mb(ops), 3),
        "flops": flops, "gflops": round(flops / 1e9, 4),
        "op_counts": dict(sorted(kinds.items())),
        **DEPTH.get(arch.space, lambda a: {})(arch),
        "choices": dict(arch.choices),
    })
    return info


def format_info(info: dict[str, Any]) -> str:
    """``hwnas info``'s plain-text view: one ``key: value`` line per figure, then one line per choice."""
    lines = [f"{k}: {v}" for k, v in info.items() if k not in ("choices", "op_counts")]
    lines.append("op_counts: " + ", ".join(f"{k}={v}" for k, v in info["op_counts"].items()))
    lines.append("choices:")
    lines += [f"  {k}: {v}" for k, v in info["choices"].items()]
    return "\n".join(lines)
