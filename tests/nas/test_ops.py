"""The op vocabulary: keys, validation, parameter counts and analytic FLOPs against a counted reference.

The reference runs the built module under ``torch.utils.flop_counter.FlopCounterMode``. That counter only knows
matmuls, convolutions and attention kernels, so :data:`ELEMENTWISE` teaches it the element-wise aten ops the modules
use, with the same conventions the analytic formulas document (a multiply-add is 2; an element-wise op costs its
per-element constant times the output size; a reduction costs its input size). Every aten op the module runs
must be either counted or listed as data movement in :data:`FREE`, so a module that starts using a new op fails
here instead of being silently under-counted.
"""
from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count, flop_registry

from nas.spaces import OP_REGISTRY, Context, OpError, OpSpec
from nas.spaces.ops import build_op, get_op, op_bytes, op_flops, op_params

aten = torch.ops.aten


def _numel(shape) -> int:
    if shape and isinstance(shape[0], (list, tuple, torch.Size)):  # ops returning several tensors: the first
        shape = shape[0]
    return math.prod(shape)


def _per_element(k: int):
    return lambda *args, out_shape=None, **kwargs: k * _numel(out_shape)


def _reduction(x_shape, *args, out_shape=None, **kwargs) -> int:
    return _numel(x_shape)


def _pool(x_shape, kernel_size, *args, out_shape=None, **kwargs) -> int:
    return math.prod(kernel_size) * _numel(out_shape)  # one op per window element


def _addmm(bias_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * a_shape[0] * a_shape[1] * b_shape[1] + _numel(out_shape)  # matmul + bias


def _convolution(x_shape, w_shape, bias_shape, stride, padding, dilation, transposed, *args, out_shape=None,
                 **kwargs) -> int:
    return conv_flop_count(x_shape, w_shape, out_shape, transposed) + (_numel(out_shape) if bias_shape else 0)


ELEMENTWISE = {
    aten.add: _per_element(1), aten.sub: _per_element(1), aten.mul: _per_element(1), aten.div: _per_element(1),
    aten.masked_fill: _per_element(1), aten.eq: _per_element(1), aten.relu: _per_element(1), aten.tanh: _per_element(1), aten.clamp: _per_element(1),
    aten.gelu: _per_element(8), aten.native_layer_norm: _per_element(8), aten._softmax: _per_element(5),
    aten.native_batch_norm: _per_element(2), aten._native_batch_norm_legit_no_training: _per_element(2),
    aten.sum: _reduction, aten.mean: _reduction,
    aten.avg_pool2d: _pool, aten.max_pool2d_with_indices: _pool,
    aten.addmm: _addmm, aten.convolution: _convolution,
}
COUNTED = set(flop_registry) | set(ELEMENTWISE)
FREE = {  # data movement and tensor creation: no arithmetic
    aten.view, aten._unsafe_view, aten.t, aten.transpose, aten.permute, aten.expand, aten.clone, aten.unbind,
    aten.unsqueeze, aten.squeeze, aten.empty, aten.embedding, aten.arange, aten.stack, aten.zeros_like,
    aten.detach, aten.select, aten.slice, aten.split, aten.cat, aten.lift_fresh,
}


class _Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.overloadpacket] += 1
        return func(*args, **(kwargs or {}))


def counted_flops(spec: OpSpec, ctx: Context) -> int:
    """FLOPs of the built module on its own example inputs, counted op by op."""
    module = build_op(spec).eval()
    inputs = get_op(spec.kind).example_inputs(spec, ctx, torch.Generator().manual_seed(0))
    counter = FlopCounterMode(display=False, custom_mapping=ELEMENTWISE)
    with torch.no_grad(), counter, _Recorder() as rec:
        module(*inputs.values())
    unknown = sorted(str(op) for op in rec.ops if op not in COUNTED and op not in FREE)
    assert not unknown, f"{spec.key} runs aten ops the reference cannot count: {unknown}; add them to the test"
    return counter.get_total_flops()


# One strategy per registered kind: adding an op to the vocabulary without a strategy here fails test_every_op_*.
HIDDENS = st.sampled_from([8, 16, 24, 32, 48])
KINDS = {
    "conv": st.builds(dict, k=st.sampled_from([1, 3, 5, 7]), dilation=st.integers(1, 3)),
    "avgpool": st.builds(dict, k=st.sampled_from([1, 3, 5])),
    "maxpool": st.builds(dict, k=st.sampled_from([1, 3, 5])),
    "identity": st.just({}),
    "zero": st.just({}),
    "mha": st.builds(dict, heads=st.integers(1, 4), head_dim=st.sampled_from([4, 8, 16])),
    "ffn": st.builds(dict, inner=st.integers(4, 128)),
    "sepconv": st.builds(dict, k=st.sampled_from([1, 3, 5, 7])),
    "embed": st.builds(dict, vocab=st.integers(20, 200), dim=st.sampled_from([8, 16, 32]), max_len=st.just(64),
                       types=st.integers(1, 2)),
    "head": st.builds(dict, labels=st.integers(1, 5)),
    "proj": st.builds(dict, d_in=st.integers(4, 48)),
    "combine": st.builds(dict, nodes=st.integers(1, 4)),
    "add": st.builds(dict),
}
CONTEXTS = st.builds(Context, batch=st.integers(1, 4), seq_len=st.integers(1, 24))


def specs(kind: str):
    return st.builds(lambda h, p: OpSpec.make(kind, h, **p), HIDDENS, KINDS[kind])


def test_every_registered_op_has_a_strategy():
    assert set(KINDS) == set(OP_REGISTRY), "add a parameter strategy for each new op kind to KINDS"


@pytest.mark.parametrize("kind", sorted(KINDS))
@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_analytic_flops_match_counted_reference(kind, data):
    spec, ctx = data.draw(specs(kind)), data.draw(CONTEXTS)
    ref = counted_flops(spec, ctx)
    assert op_flops(spec, ctx) == pytest.approx(ref, rel=0.05, abs=0), f"{spec.key} @ {ctx}"


@pytest.mark.parametrize("kind", sorted(KINDS))
@settings(max_examples=8, deadline=None)
@given(data=st.data())
def test_params_equal_built_module(kind, data):
    spec = data.draw(specs(kind))
    assert op_params(spec) == sum(p.numel() for p in build_op(spec).parameters()), spec.key


@pytest.mark.parametrize("kind", sorted(KINDS))
@settings(max_examples=5, deadline=None)
@given(data=st.data())
def test_module_keeps_shape_and_costs_are_monotone_in_tokens(kind, data):
    spec, ctx = data.draw(specs(kind)), data.draw(CONTEXTS)
    module = build_op(spec).eval()
    inputs = get_op(spec.kind).example_inputs(spec, ctx)
    with torch.no_grad():
        y = module(*inputs.values())
    if spec.kind == "head":
        assert y.shape == (ctx.batch, spec.get("labels"))
    else:
        assert y.shape == (ctx.batch, ctx.seq_len, spec.hidden)
    bigger = Context(ctx.batch, ctx.seq_len * 2)
    assert op_flops(spec, bigger) >= op_flops(spec, ctx) >= 0
    assert op_bytes(spec, bigger) >= op_bytes(spec, ctx) >= 0


def test_key_round_trip_and_template():
    spec = OpSpec.make("conv", 64, k=5, dilation=2)
    assert spec.key == "conv:dilation=2,k=5|h=64"
    assert spec.template == "conv:dilation=2,k=5"
    assert OpSpec.parse(spec.key) == spec
    assert OpSpec.parse(spec.template, hidden=64) == spec
    assert spec.with_hidden(32).key == "conv:dilation=2,k=5|h=32"
    assert OpSpec.parse("identity|h=8").key == "identity|h=8"


@pytest.mark.parametrize("key, fragment", [
    ("bogus:k=3|h=8", "unknown op 'bogus'"),
    ("conv:k=3|h=8", "takes parameters ['dilation', 'k']"),
    ("conv:dilation=1,k=4|h=8", "kernel size must be odd"),
    ("ffn:inner=x|h=8", "malformed op key"),
    ("ffn:inner=8|w=8", "malformed op key"),
    ("ffn:inner=8", "has no width"),
    ("ffn:inner=0|h=8", "must be positive"),
    ("ffn:inner=8|h=0", "hidden must be positive"),
])
def test_bad_keys_say_what_is_wrong(key, fragment):
    with pytest.raises(OpError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        OpSpec.parse(key)


@pytest.mark.parametrize("key", [
    "conv:dilation=2,k=5|h=8", "avgpool:k=3|h=8", "maxpool:k=3|h=8", "sepconv:k=5|h=8", "mha:head_dim=4,heads=2|h=8",
    "ffn:inner=16|h=8", "identity|h=8", "zero|h=8",
])
def test_padding_does_not_change_real_tokens(key):
    """Real tokens see padding exactly as they see the end of a shorter sequence (else padding changes predictions)."""
    torch.manual_seed(0)
    module = build_op(OpSpec.parse(key)).eval()
    x = -torch.rand(1, 10, 8) - 0.1  # all negative: max pooling must not see padding as 0
    x[0, 6:] = 100.0  # padding content must not matter either
    mask = torch.ones(1, 10)
    mask[0, 6:] = 0
    with torch.no_grad():
        padded, short = module(x, mask), module(x[:, :6], mask[:, :6])
    assert torch.allclose(padded[:, :6], short, atol=1e-5), key
