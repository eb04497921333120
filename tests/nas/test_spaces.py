"""Search spaces: determinism, sizes, cost structure against built models, presets, and model behaviour."""
from __future__ import annotations

import math
import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nas.export import space_inputs
from nas.spaces import SPACE_REGISTRY, Context, SpaceError, get_space
from nas.spaces.adabert import edge_names

SPACES = sorted(SPACE_REGISTRY)
PRESETS = ["tiny", "small", "paper"]


@pytest.fixture(params=SPACES)
def tiny(request):
    return get_space(request.param, "tiny")


def test_both_spaces_are_registered():
    assert {"adabert", "nasbert"} <= set(SPACES)


def test_same_seed_same_architecture_different_seeds_differ(tiny):
    assert tiny.sample(7) == tiny.sample(7)
    assert tiny.sample(random.Random(7)) == tiny.sample(7)
    keys = {tiny.sample(s).key for s in range(20)}
    assert len(keys) >= 18  # 20 draws from thousands of architectures: at most a rare collision


def test_size_is_the_product_of_choice_counts(tiny):
    assert tiny.size() == math.prod(len(d.choices) for d in tiny.decisions())
    assert tiny.size() > 1


def test_indices_round_trip_and_enumerate(tiny):
    a = tiny.sample(3)
    assert tiny.from_indices(tiny.indices(a)) == a
    first = list(tiny.enumerate(limit=5))
    assert len(first) == 5 and len({x.key for x in first}) == 5
    assert first[0] == tiny.from_indices({d.name: 0 for d in tiny.decisions()})


@pytest.mark.parametrize("preset", PRESETS)
def test_decision_counts(preset):
    ada = get_space("adabert", preset)
    assert [d.name for d in ada.decisions()] == ["cells"] + [name for name, _, _ in edge_names()]
    assert len(ada.decisions()) == 9 + 1
    assert ada.decision("cells").choices == tuple(range(1, ada.preset.max_cells + 1))
    nb = get_space("nasbert", preset)
    assert len(nb.decisions()) == nb.preset.blocks + nb.preset.layers
    assert sum(d.name.endswith(".hidden") for d in nb.decisions()) == nb.preset.blocks


@pytest.mark.parametrize("space", SPACES)
@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_constructs_and_costs(space, preset):
    s = get_space(space, preset)
    a = s.sample(0)
    assert a.preset == preset
    assert s.analytic_params(a) > 0
    assert s.flops(a, Context(1, 128)) > s.flops(a, Context(1, 32)) > 0
    assert s.unique_ops()


def test_unknown_preset_and_space_say_what_exists():
    with pytest.raises(SpaceError, match=r"no preset 'huge'; choose one of \['paper', 'small', 'tiny'\]"):
        get_space("nasbert", "huge")
    with pytest.raises(SpaceError, match="unknown space 'bogus'; known spaces: adabert, nasbert"):
        get_space("bogus")


def test_unique_ops_cover_every_sampled_architecture(tiny):
    unique = set(tiny.unique_ops())
    for seed in range(25):
        assert set(tiny.arch_ops(tiny.sample(seed))) <= unique


def test_unique_ops_are_all_used_somewhere(tiny):
    """No op is profiled for nothing: each unique op runs in some architecture (checked by sampling)."""
    used = set()
    for seed in range(300):
        used |= set(tiny.arch_ops(tiny.sample(seed)))
    assert used == set(tiny.unique_ops())


@pytest.mark.parametrize("num_labels", [2, 5])
def test_analytic_params_equal_built_model(tiny, num_labels):
    for seed in range(8):
        a = tiny.sample(seed)
        assert tiny.analytic_params(a, num_labels) == tiny.params(a, num_labels), a.key


def test_small_preset_params_match_too():
    for name in SPACES:
        s = get_space(name, "small")
        a = s.sample(1)
        assert s.analytic_params(a) == s.params(a)


def _counted_model_flops(model, inputs) -> int:
    from test_ops import ELEMENTWISE  # the same counting conventions as the per-op test

    counter = FlopCounterMode(display=False, custom_mapping=ELEMENTWISE)
    with torch.no_grad(), counter:
        model(*inputs.values())
    return counter.get_total_flops()


def test_nasbert_model_flops_match_the_sum_of_its_ops():
    s = get_space("nasbert", "tiny")
    for seed in range(6):
        a = s.sample(seed)
        model = s.build(a, pair=True).eval()
        counted = _counted_model_flops(model, space_inputs(s, 2, 12, pair=True, padded=False))
        assert s.flops(a, Context(2, 12)) == pytest.approx(counted, rel=0.05)


def test_adabert_model_flops_are_within_5_percent_for_conv_cells():
    s = get_space("adabert", "tiny")
    a = s.sample(0)
    a.choices.update({name: "conv:dilation=1,k=3" for name, _, _ in edge_names()})
    model = s.build(a).eval()
    counted = _counted_model_flops(model, space_inputs(s, 2, 12, padded=False))
    assert s.flops(a, Context(2, 12)) == pytest.approx(counted, rel=0.05)


def test_adabert_model_flops_identity_cells():
    s = get_space("adabert", "tiny")
    a = s.sample(0)
    a.choices.update({name: "identity" for name, _, _ in edge_names()}, cells=3)
    model = s.build(a).eval()
    counted = _counted_model_flops(model, space_inputs(s, 2, 12, padded=False))
    assert s.flops(a, Context(2, 12)) == pytest.approx(counted, rel=0.05)


# ------------------------------------------------------------------------------------------------ models
@pytest.mark.parametrize("space, pair", [("adabert", False), ("adabert", True), ("nasbert", False), ("nasbert", True)])
def test_models_give_logits_and_ignore_padding(space, pair):
    """A padded row gives the same logits as the same tokens without the padding."""
    s = get_space(space, "tiny")
    torch.manual_seed(0)
    for seed in range(4):
        model = s.build(s.sample(seed), num_labels=3, pair=pair).eval()
        inputs = space_inputs(s, batch=2, seq_len=14, pair=pair, seed=seed)  # row 0 padded from position 7
        with torch.no_grad():
            logits = model(*inputs.values())
            short = model(*[v[:1, :7] for v in inputs.values()])
        assert logits.shape == (2, 3) and torch.isfinite(logits).all()
        assert torch.allclose(logits[:1], short, atol=1e-5)


def test_adabert_pair_reads_segments_and_single_does_not_need_them():
    s = get_space("adabert", "tiny")
    a = s.sample(0)
    a.choices.update({name: "conv:dilation=1,k=3" for name, _, _ in edge_names()})
    torch.manual_seed(0)
    pair_model = s.build(a, pair=True).eval()
    inputs = space_inputs(s, batch=2, seq_len=10, pair=True, padded=False)
    other = dict(inputs, token_type_ids=torch.zeros_like(inputs["token_type_ids"]))
    with torch.no_grad():
        assert not torch.allclose(pair_model(*inputs.values()), pair_model(*other.values()))
    single = s.build(a, pair=False).eval()
    single.load_state_dict(pair_model.state_dict())  # same weights: only the input handling differs
    with torch.no_grad():
        y = single(inputs["input_ids"], inputs["attention_mask"])
    assert y.shape == (2, 2) and torch.isfinite(y).all()
    assert space_inputs(s, pair=False).keys() == {"input_ids", "attention_mask"}


def test_nasbert_block_outputs_have_block_widths():
    s = get_space("nasbert", "tiny")
    a = s.sample(2)
    model = s.build(a).eval()
    inputs = space_inputs(s, batch=2, seq_len=9)
    with torch.no_grad():
        outs = model.block_outputs(*inputs.values())
    widths = [a.choices[f"block{b}.hidden"] for b in range(s.preset.blocks)]
    assert [o.shape[-1] for o in outs] == [widths[0]] + widths
    assert all(o.shape[:2] == (2, 9) for o in outs)


def test_build_refuses_a_foreign_choice(tiny):
    a = tiny.sample(0)
    name = tiny.decisions()[-1].name
    a.choices[name] = "no-such-op"
    with pytest.raises(SpaceError, match=f"decision '{name}'"):
        tiny.build(a)


def test_cse_op_bag_matches_the_exported_onnx_graph(tmp_path):
    """``arch_ops(cse=True)`` counts the pooling nodes the exported graph really holds (the exporter merges a
    pooling repeated on one tensor), for pooling-heavy AdaBERT cells of 1-3 cells."""
    import collections

    import onnx

    from nas.arch import Architecture
    from nas.export import export_arch
    from nas.spaces.adabert import edge_names

    space = get_space("adabert", "tiny")
    pools = ("maxpool:k=3", "avgpool:k=3")
    for seed in range(4):
        rng = random.Random(seed)
        choices = dict(space.sample(seed).choices)
        choices.update({n: rng.choice(pools) for n, _, _ in edge_names() if rng.random() < 0.6})
        arch = Architecture(space.name, space.version, space.preset.name, choices)
        graph = onnx.load(str(export_arch(arch, tmp_path / f"m{seed}.onnx"))).graph
        nodes = collections.Counter(n.op_type for n in graph.node)
        bag, plain = space.arch_ops(arch, cse=True), space.arch_ops(arch)
        assert (nodes["MaxPool"], nodes["AveragePool"]) == tuple(bag[space.op(t)] for t in pools)
        assert sum(bag.values()) <= sum(plain.values())


def _dead_cell_archs(space):
    """AdaBERT architectures with cells their output does not depend on: no in1 edge (every other cell runs), no
    input edge at all (only the last cell runs, on zeros), and an ordinary one for contrast."""
    from nas.arch import Architecture
    from nas.spaces.adabert import edge_names

    out = []
    for seed, drop in [(0, ("in1",)), (1, ("in1",)), (2, ("in0", "in1")), (3, ())]:
        choices = dict(space.sample(seed).choices, cells=space.decision("cells").choices[-1])
        choices.update({n: "zero" for n, _, src in edge_names() if src in drop})
        choices.update({n: "conv:dilation=1,k=3" for n, _, src in edge_names()
                        if src not in drop and src in ("in0", "in1") and choices[n] == "zero"})
        out.append(Architecture(space.name, space.version, space.preset.name, choices))
    return out


def _graph_nodes(arch, path) -> dict:
    """Node types of the exported graph, without the shape reads of the zero accumulators (which follow whichever
    tensor a cell's in0 is, so they differ between two architectures that run the same ops)."""
    import collections

    import onnx

    from nas.export import export_arch

    nodes = onnx.load(str(export_arch(arch, path))).graph.node
    return collections.Counter(x.op_type for x in nodes if x.op_type not in ("Shape", "ConstantOfShape"))


def test_dead_cells_are_skipped_at_inference_and_priced_as_they_run(tmp_path):
    """A model skips the cells its output does not depend on, with the same logits as running them all; the
    exported graph holds the nodes of the architecture ``runs_as`` prices it as, and the cost model and
    ``arch_ops`` price that one."""
    from latency.archsets import capacity_model
    from nas.spaces.adabert import live_cells

    space = get_space("adabert", "small")
    cap = capacity_model(space)
    ids = torch.randint(0, 100, (2, 16))
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, 12:] = 0
    for i, arch in enumerate(_dead_cell_archs(space)):
        model = space.build(arch).eval()
        ran: list[int] = []
        for cell in model.cells:
            cell.register_forward_hook(lambda m, a, o, ran=ran: ran.append(1))
        with torch.no_grad():
            logits = model(ids, mask)
            ran_forward = len(ran)
            full = model.head(model.features(ids, mask)[-1], mask.float())
        assert torch.allclose(logits, full, atol=1e-6)
        runs = space.from_indices(space.runs_as(space.indices(arch)))
        assert ran_forward == sum(model.live) == runs.choices["cells"]
        assert (runs == arch) == all(model.live)
        assert _graph_nodes(arch, tmp_path / f"a{i}.onnx") == _graph_nodes(runs, tmp_path / f"r{i}.onnx")
        for cse in (False, True):
            assert space.arch_ops(arch, cse=cse) == space.arch_ops(runs, cse=cse)
        assert cap.value(space.indices(arch)) == cap.value(space.indices(runs))
    assert live_cells(8, True, False) == [k % 2 == 1 for k in range(8)]
    assert live_cells(7, True, False) == [k % 2 == 0 for k in range(7)]
