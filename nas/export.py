"""ONNX export (dynamic batch and sequence length) and the onnxruntime parity check.

>>> from nas.spaces import get_space
>>> space = get_space("nasbert", "tiny")
>>> model = space.build(space.sample(0), pair=True)
>>> path = export_model(model, space, "/tmp/hwnas_doctest.onnx", pair=True)
>>> check_parity(model, path, space_inputs(space, batch=3, seq_len=20, pair=True, seed=1)) < 1e-4
True
"""
from __future__ import annotations

import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nas.errors import HwnasError
from nas.io import atomic_write_bytes

log = logging.getLogger(__name__)

OPSET = 17
TOKEN_AXES = {0: "batch", 1: "seq_len"}


class ExportError(HwnasError, RuntimeError):
    """The model could not be exported or does not match its torch output."""


def export_module(
    module: nn.Module,
    inputs: dict[str, torch.Tensor],
    path: str | os.PathLike,
    output_names: tuple[str, ...] = ("output",),
    dynamic_axes: dict[str, dict[int, str]] | None = None,
) -> Path:
    """Export ``module(*inputs.values())`` to ONNX at ``path`` (atomically), in eval mode.

    Args:
        module: the torch module; called positionally with the values of ``inputs`` in order.
        inputs: example inputs by ONNX input name.
        path: where the ``.onnx`` file goes.
        output_names: names of the graph outputs.
        dynamic_axes: per input/output name, the axes that vary (``{0: "batch", 1: "seq_len"}``);
            by default axes 0 and 1 of every input and axis 0 of every output.
    Returns:
        The path written.
    """
    if dynamic_axes is None:
        dynamic_axes = {name: dict(TOKEN_AXES) for name, t in inputs.items() if t.dim() >= 2}
        dynamic_axes.update({name: {0: "batch"} for name in output_names})
    was_training = module.training
    module.eval()
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, tuple(inputs.values()), buf, input_names=list(inputs), output_names=list(output_names),
                dynamic_axes=dynamic_axes, opset_version=OPSET, dynamo=False, do_constant_folding=True,
            )
    except Exception as e:  # torch raises many types here; re-raise as one with context
        raise ExportError(f"ONNX export of {type(module).__name__} failed: {e}") from e
    finally:
        module.train(was_training)
    return atomic_write_bytes(path, buf.getvalue())


def space_inputs(space, batch: int = 2, seq_len: int = 16, pair: bool = False, seed: int = 0,
                 padded: bool = True) -> dict[str, torch.Tensor]:
    """Example token inputs for a model of ``space``: ``input_ids``, ``attention_mask`` and, for pair tasks or
    spaces that always read segments, ``token_type_ids``. With ``padded``, the first row is padded at the end."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, space.preset.vocab, (batch, seq_len), generator=g)  # (B, T)
    mask = torch.ones(batch, seq_len, dtype=torch.long)  # (B, T)
    if padded and seq_len > 2:
        mask[0, seq_len // 2:] = 0
        ids[0, seq_len // 2:] = 0
    out = {"input_ids": ids, "attention_mask": mask}
    if pair or space.name == "nasbert":
        types = torch.zeros_like(ids)
        types[:, seq_len // 2:] = 1 if pair else 0
        out["token_type_ids"] = types
    return out


def export_model(model: nn.Module, space, path: str | os.PathLike, pair: bool = False) -> Path:
    """Export a model of ``space`` taking token inputs and returning ``logits``."""
    return export_module(model, space_inputs(space, pair=pair), path, output_names=("logits",))


def export_arch(arch, path: str | os.PathLike, num_labels: int = 2, pair: bool = False, seed: int = 0) -> Path:
    """Build ``arch`` with random weights (seeded) and export it; latency does not need trained weights."""
    space = arch.get_space()
    torch.manual_seed(seed)
    model = space.build(arch, num_labels=num_labels, pair=pair)
    return export_model(model, space, path, pair=pair)


def ort_session(path: str | os.PathLike, threads: int = 1, providers: list[str] | None = None,
                disabled_optimizers: tuple[str, ...] = (), optimized_path: str | os.PathLike | None = None):
    """An onnxruntime session with a fixed thread count (intra- and inter-op) and full graph optimisation.

    ``disabled_optimizers`` names graph transformers to leave out (e.g. ``"SkipLayerNormFusion"``);
    ``optimized_path`` makes onnxruntime write the graph it actually runs there (to inspect its fusions).
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if optimized_path is not None:
        so.optimized_model_filepath = str(optimized_path)
    return ort.InferenceSession(str(path), so, providers=providers or ["CPUExecutionProvider"],
                                disabled_optimizers=list(disabled_optimizers) or None)


def check_parity(model: nn.Module, path: str | os.PathLike, inputs: dict[str, torch.Tensor]) -> float:
    """Max absolute difference between torch and onnxruntime outputs on ``inputs``."""
    sess = ort_session(path)
    names = {i.name for i in sess.get_inputs()}
    feed = {k: v.numpy() for k, v in inputs.items() if k in names}
    ort_out = sess.run(None, feed)[0]
    model.eval()
    with torch.no_grad():
        ref = model(*[inputs[k] for k in inputs]).numpy()
    return float(np.abs(ort_out - ref).max())


PARITY_TOL = 1e-4  # max |torch - onnxruntime| accepted on the check inputs
PARITY_SHAPE = (3, 23)  # (batch, seq_len) of the check: unlike the export example (2, 16), and with a padded row


def export_cli(arch_path: str | os.PathLike, out: str | os.PathLike, weights: str | os.PathLike | None = None,
               num_labels: int = 2, pair: bool = False) -> dict:
    """``hwnas export``: build (or load) a model, export it and refuse it unless onnxruntime agrees with torch.

    Args:
        arch_path: the architecture file.
        out: the ``.onnx`` file to write; it appears only once the parity check has passed.
        weights: a trained model folder (``nas.modeling.save_pretrained`` layout); its config decides
            ``num_labels`` and ``pair``, and its architecture must be the one in ``arch_path``.
            Without it the model gets random (seeded) weights, which is all latency needs.
        num_labels, pair: the head and the input kind, for random weights.
    Returns:
        A summary: path, inputs/outputs, labels, pair, parameters and the parity figure.
    Raises:
        ExportError: export failed, the weights are for another architecture, or parity is worse than 1e-4.

    Example: ``hwnas export arch.json --out model.onnx --weights runs/sst2/model``.
    """
    from nas.arch import Architecture
    from nas.modeling import load_pretrained

    arch = Architecture.load(arch_path)
    space = arch.get_space()
    if weights is not None:
        model, trained, config = load_pretrained(weights)
        if trained != arch:
            raise ExportError(
                f"{weights}: the model was trained for another architecture than {arch_path} "
                f"({_first_difference(trained, arch)}); pass the arch.json saved with the model"
            )
        num_labels, pair = config.num_labels, config.pair
    else:
        torch.manual_seed(0)
        model = space.build(arch, num_labels=num_labels, pair=pair)
    model.eval()

    out = Path(out)
    if out.is_dir():
        raise ExportError(f"{out}: is a folder; pass a file name such as {out / 'model.onnx'}")
    tmp = out.with_name(f".{out.name}.unchecked")
    try:
        export_model(model, space, tmp, pair=pair)
        inputs = space_inputs(space, *PARITY_SHAPE, pair=pair, seed=1, padded=True)
        names = [i.name for i in ort_session(tmp).get_inputs()]
        if names != list(inputs):
            raise ExportError(f"exported inputs are {names}, expected {list(inputs)}; this is a bug in the space's model")
        diff = check_parity(model, tmp, inputs)
        if not diff <= PARITY_TOL:  # also refuses NaN
            raise ExportError(
                f"onnxruntime output differs from torch by {diff:.3g} (> {PARITY_TOL:g}) at batch/seq_len "
                f"{PARITY_SHAPE}; the export is wrong for this architecture, please report it with {arch_path}"
            )
        os.replace(tmp, out)
    except OSError as e:
        raise ExportError(f"{out}: cannot write ({e.strerror}); check the folder exists and is writable") from None
    finally:
        if tmp.is_file():  # an export that failed its checks leaves nothing behind
            tmp.unlink()
    return {
        "out": str(out), "space": arch.space, "preset": arch.preset, "inputs": names, "outputs": ["logits"],
        "num_labels": num_labels, "pair": pair, "weights": str(weights) if weights is not None else None,
        "params": sum(p.numel() for p in model.parameters()), "onnx_bytes": out.stat().st_size,
        "parity_max_abs_diff": diff, "parity_batch": PARITY_SHAPE[0], "parity_seq_len": PARITY_SHAPE[1],
    }


def _first_difference(a, b) -> str:
    for name in ("space", "version", "preset"):
        if getattr(a, name) != getattr(b, name):
            return f"{name} {getattr(a, name)!r} vs {getattr(b, name)!r}"
    diffs = [k for k in a.choices if a.choices[k] != b.choices.get(k)]
    return f"choice {diffs[0]!r}: {a.choices[diffs[0]]!r} vs {b.choices.get(diffs[0])!r}" if diffs else "choices"
