"""Saving and loading models in the ``save_pretrained`` layout: ``config.json`` + ``model.safetensors`` (+ a card).

``config.json`` holds what rebuilds the model without its weights: the hwnas version, the architecture, the number
of labels and whether the model reads sentence pairs. ``model.safetensors`` holds the state dict (no pickles).
``README.md`` is a short model card. Each file is written atomically, the config last, so a folder with a config
is a complete one.

>>> import tempfile
>>> from nas.spaces import get_space
>>> space = get_space("nasbert", "tiny")
>>> arch = space.sample(0)
>>> folder = save_pretrained(space.build(arch), arch, tempfile.mkdtemp(), num_labels=2, pair=False)
>>> model, loaded, config = load_pretrained(folder)
>>> loaded == arch, config.num_labels
(True, 2)
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from nas.arch import Architecture
from nas.errors import HwnasError
from nas.io import atomic_write_bytes, atomic_write_text, read_json_object

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
CARD = "README.md"
FORMAT = "hwnas.model/1"


class ModelError(HwnasError, ValueError):
    """A model folder that is missing, incomplete, corrupt or does not match its architecture."""


@dataclass
class ModelConfig:
    """The contents of a model folder's ``config.json``."""

    arch: dict[str, Any]  # the architecture, as in arch.json
    num_labels: int  # classifier outputs
    pair: bool  # True if the model reads sentence pairs (token_type_ids)
    hwnas_version: str = ""  # version of hwnas that wrote the folder
    format: str = FORMAT  # layout version of the folder
    card: dict[str, Any] = field(default_factory=dict)  # extra model-card fields (task, device, budget, ...)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def save_pretrained(
    model: nn.Module,
    arch: Architecture,
    out_dir: str | os.PathLike,
    num_labels: int,
    pair: bool,
    extra_card: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (built from ``arch``) to ``out_dir`` as config.json + model.safetensors + README.md.

    Args:
        model: a model built by ``arch``'s space, with ``num_labels`` and ``pair`` as given here.
        arch: its architecture.
        out_dir: the folder (created if missing; files in it are replaced).
        num_labels: classifier outputs.
        pair: whether the model reads sentence pairs.
        extra_card: model-card fields (e.g. task, device profile, budget_ms, accuracy), kept in config.json too.
    Returns:
        The folder.
    """
    from safetensors.torch import save

    from nas import __version__

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ModelError(f"{out}: exists and is not a folder; choose another output folder")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}  # safetensors needs contiguous
    config = ModelConfig(arch.to_dict(), int(num_labels), bool(pair), __version__, FORMAT, dict(extra_card or {}))
    try:
        atomic_write_bytes(out / WEIGHTS, save(state, metadata={"format": "pt"}))
        atomic_write_text(out / CARD, model_card(config, sum(v.numel() for v in model.parameters())))
        atomic_write_text(out / CONFIG, json.dumps(config.to_dict(), indent=2, default=str) + "\n")
    except OSError as e:
        raise ModelError(f"{out}: cannot write the model ({e.strerror}); check the path and free space") from None
    return out


def model_card(config: ModelConfig, params: int) -> str:
    """A short markdown card: the architecture, its size and any extra fields (task, device, budget, ...)."""
    a = config.arch
    lines = [
        f"# hwnas model: {a['space']} ({a['preset']})", "",
        f"- parameters: {params:,}", f"- labels: {config.num_labels}",
        f"- input: {'sentence pairs' if config.pair else 'single sentences'}",
        f"- written by: hwnas {config.hwnas_version}",
    ]
    lines += [f"- {k}: {v}" for k, v in config.card.items()]
    lines += ["", "Load with `nas.modeling.load_pretrained(folder)`; export with `hwnas export arch.json --weights "
              "FOLDER --out model.onnx`.", "", "Architecture:", "", "```json",
              json.dumps(a, indent=2), "```", ""]
    return "\n".join(lines)


def load_config(model_dir: str | os.PathLike) -> ModelConfig:
    """Read and check a model folder's ``config.json``."""
    folder = Path(model_dir)
    if not folder.is_dir():
        raise ModelError(f"{folder}: no such model folder; write one with nas.modeling.save_pretrained")
    path = folder / CONFIG
    if not path.is_file():
        raise ModelError(f"{path}: missing; {folder} is not a complete model folder (re-save the model)")
    d = read_json_object(path, ModelError, "re-save the model")
    if d.get("format") != FORMAT:
        raise ModelError(f"{path}: field 'format' is {d.get('format')!r}, expected {FORMAT!r}; re-save the model")
    for name, kind, what in (("arch", dict, "an object"), ("num_labels", int, "an integer"),
                             ("pair", bool, "true or false")):
        if not isinstance(d.get(name), kind) or (kind is int and isinstance(d.get(name), bool)):
            raise ModelError(f"{path}: field {name!r} must be {what}, got {d.get(name)!r}; re-save the model")
    known = set(ModelConfig.__dataclass_fields__)
    return ModelConfig(**{k: v for k, v in d.items() if k in known})


def load_pretrained(model_dir: str | os.PathLike) -> tuple[nn.Module, Architecture, ModelConfig]:
    """Rebuild a saved model from its architecture and load its weights (eval mode, CPU).

    Returns:
        ``(model, arch, config)``.
    Raises:
        ModelError: the folder is missing or incomplete, a file is corrupt, or the weights do not fit the
            architecture (names and shapes are compared).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(model_dir)
    config = load_config(folder)
    arch = Architecture.from_dict(config.arch, source=f"{folder / CONFIG}: field 'arch'")
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise ModelError(f"{weights}: missing; {folder} is not a complete model folder (re-save the model)")
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError) as e:
        raise ModelError(f"{weights}: cannot read the weights ({e}); the file is corrupt, re-save the model") from None
    model = arch.get_space().build(arch, num_labels=config.num_labels, pair=config.pair)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing, unexpected = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{what} {names[:3]}{' ...' if len(names) > 3 else ''}"
            for what, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if names
        )
        raise ModelError(f"{weights}: weights do not fit the architecture in {CONFIG} ({detail}); "
                         "save the model together with the architecture it was built from")
    model.load_state_dict(state)
    model.eval()
    return model, arch, config


def update_card(model_dir: str | os.PathLike, fields: dict[str, Any]) -> None:
    """Add or replace model-card fields (e.g. a measured latency) in a saved folder's config.json and README.md."""
    from safetensors.torch import load_file

    folder = Path(model_dir)
    config = load_config(folder)
    config.card.update(fields)
    params = sum(v.numel() for v in load_file(str(folder / WEIGHTS)).values())
    atomic_write_text(folder / CARD, model_card(config, params))
    atomic_write_text(folder / CONFIG, json.dumps(config.to_dict(), indent=2, default=str) + "\n")


__all__ = ["ModelConfig", "ModelError", "save_pretrained", "load_pretrained", "load_config", "model_card",
           "update_card"]
