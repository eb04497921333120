"""``arch_info``: the figures ``hwnas info`` shows agree with the space's own accounting."""
from __future__ import annotations

import pytest

from nas.arch import ArchError
from nas.errors import HwnasError
from nas.report import arch_info, format_info
from nas.spaces import Context, get_space


@pytest.mark.parametrize("space_name", ["adabert", "nasbert"])
def test_arch_info_figures(space_name, tmp_path):
    space = get_space(space_name, "tiny")
    arch = space.sample(5)
    path = arch.save(tmp_path / "arch.json")
    info = arch_info(path, batch=2, seq_len=48, num_labels=3)
    assert info["file"] == str(path)
    assert (info["space"], info["preset"], info["version"]) == (space_name, "tiny", 1)
    assert info["params"] == space.params(arch, 3) == info["analytic_params"]
    words = space.embed_spec(16).get("vocab") * space.embed_spec(16).get("dim") if space_name == "nasbert" else None
    if words is not None:  # what a run reads whole: every parameter but the looked-up word table
        assert info["weights_read_mb"] == pytest.approx(4e-6 * (info["analytic_params"] - words), abs=1e-3)
    assert 0 < info["weights_read_mb"] < 4e-6 * info["params"]
    assert info["flops"] == space.flops(arch, Context(2, 48), 3) > 0
    assert sum(info["op_counts"].values()) == sum(space.arch_ops(arch, 3).values())
    assert info["op_counts"]["embed"] == info["op_counts"]["head"] == 1
    assert info["choices"] == arch.choices
    if space_name == "adabert":
        assert info["cells"] == info["live_cells"] == arch.choices["cells"]
        assert info["op_counts"]["combine"] == arch.choices["cells"]
    else:
        assert info["layers"] == space.preset.layers
        assert info["active_layers"] == sum(v != "identity" for k, v in arch.choices.items() if k.startswith("layer"))
        assert len(info["block_hiddens"]) == space.preset.blocks
    text = format_info(info)
    assert f"params: {info['params']}" in text and "choices:" in text


def test_arch_info_counts_the_cells_that_run():
    """Without in1 edges only every other AdaBERT cell reaches the output: ``live_cells`` says so, and the ops, FLOPs
    and analytic parameters are those of the cells that run (the built model still holds every cell's weights)."""
    from nas.arch import Architecture
    from nas.spaces.adabert import edge_names

    space = get_space("adabert", "tiny")
    choices = {n: ("zero" if src == "in1" else "conv:dilation=1,k=3") for n, _, src in edge_names()}
    dead = Architecture(space.name, space.version, space.preset.name, {**choices, "cells": 3})
    live = Architecture(space.name, space.version, space.preset.name, {**choices, "cells": 2})
    d, lv = arch_info(dead), arch_info(live)
    assert (d["cells"], d["live_cells"], lv["live_cells"]) == (3, 2, 1)
    assert d["op_counts"]["combine"] == 2 and d["flops"] > lv["flops"]
    assert d["analytic_params"] < d["params"]


def test_arch_info_accepts_an_architecture_and_scales_with_context():
    arch = get_space("nasbert", "tiny").sample(1)
    short, long = arch_info(arch, 1, 16), arch_info(arch, 1, 64)
    assert "file" not in short and long["flops"] > short["flops"] and long["params"] == short["params"]


def test_arch_info_errors(tmp_path):
    with pytest.raises(ArchError, match="no such architecture file"):
        arch_info(tmp_path / "missing.json")
    with pytest.raises(HwnasError, match="must be positive"):
        arch_info(get_space("adabert", "tiny").sample(0), batch=0)
