"""One AdaBERT run, end to end, in a run folder: check, search, derive, fit to the budget, retrain, export, measure,
report. Every stage is resumable: run the same call (or command) again after a kill and it goes on.

Run folder: ``config.json`` (resolved settings), ``search.pt``/``retrain.pt`` (checkpoints, removed when done),
``arch_weights.json`` (the searched probabilities), ``arch.json``, ``model/`` (``save_pretrained`` layout with a
model card), ``model.onnx``, ``history.csv`` (search, per logged step: losses, expected cost, temperature, op
distribution), ``retrain.csv``, ``report.json``.

>>> from nas.adabert.run import run_adabert                                          # doctest: +SKIP
>>> r = run_adabert(task, "runs/teacher", "intel-xeon-2c_ort-1.31_t1", 3.0, out="runs/sst2_3ms")  # doctest: +SKIP
>>> r["student_accuracy"], r["measured_latency_ms"]                                   # doctest: +SKIP
(0.85, 2.9)
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from nas.adabert.derive import derive, fit_to_budget, log_prob
from nas.adabert.search import Efficiency, new_student, new_supernet, retrain, search
from nas.arch import Architecture
from nas.configs import SearchConfig
from nas.errors import HwnasError
from nas.io import atomic_write_text, claim_run_folder, read_json_object
from nas.spaces import Context

log = logging.getLogger(__name__)


class RunError(HwnasError, ValueError):
    """A run that cannot start: infeasible budget, mismatched teacher/profile/space, or a folder of another run."""


def _cost_model(space, efficiency: str, predictor, ctx: Context, num_labels: int):
    from latency.loss import build_cost_model
    from nas.spaces.ops import op_flops, op_params

    if efficiency == "latency":
        return predictor.cost_matrix(space, ctx)
    per = {"params": op_params, "flops": lambda s: op_flops(s, ctx)}.get(efficiency)
    if per is None:
        raise RunError(f"--efficiency {efficiency!r}: choose latency, params or flops")
    return build_cost_model(space, per, num_labels, unit=efficiency)


def _verify(out: Path, space, probs, argmax_arch, cost, lat_cost, window, budget_ms: float, prof, ctx: Context,
            num_labels: int, tries: int, first) -> tuple[Architecture, list[dict], dict]:
    """Measure the fitted architecture before training and fit again where it lands outside the kept window
    (:func:`nas.verify.land`); ``verify.json`` keeps the result, so a resumed run whose first pick is the same (same
    searched weights, predictor and budget) does not measure again. Returns (architecture, its budget moves, the
    record)."""
    from nas.verify import land, profile_measurer

    path = out / "verify.json"
    if path.is_file():
        saved = read_json_object(path, RunError, "delete it to measure the pick again")
        if saved.get("budget_ms") == budget_ms and saved.get("first") == first[0].key and saved.get("arch"):
            arch = Architecture.from_dict(saved["arch"])
            space.indices(arch)
            return arch, saved.get("budget_moves", []), saved
    measure, why = profile_measurer(prof, ctx, num_labels)
    if measure is None:
        record = {"budget_ms": budget_ms, "landed": None, "note": why, "first": first[0].key,
                  "arch": first[0].to_dict(), "tries": []}
        atomic_write_text(path, json.dumps(record, indent=1) + "\n")
        return first[0], first[1], record
    moves_of: dict[str, list[dict]] = {}  # each pick's budget moves, by architecture

    def pick(scale: float):
        arch, moves = first if scale == 1.0 else fit_to_budget(
            space, probs, argmax_arch, cost, window[0] * budget_ms / scale, window[1] * budget_ms / scale)
        moves_of.setdefault(arch.key, moves)
        return arch, lat_cost.value(space.indices(arch))

    landing = land(pick, measure, budget_ms, tries, key=lambda a: a.key)
    moves = moves_of[landing.arch.key]
    record = {**landing.to_dict(budget_ms), "first": first[0].key, "arch": landing.arch.to_dict(),
              "budget_moves": moves}
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")
    log.info("%s", record["note"])
    return landing.arch, moves, record


def _write_csv(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, pd.DataFrame(rows).to_csv(index=False))


def run_adabert(task, teacher_dir: str | os.PathLike, profile: str | os.PathLike | None, budget_ms: float | None,
                out: str | os.PathLike, ctx: Context | None = None, config: SearchConfig | None = None,
                preset: str | None = None, budget_cost: float | None = None, measure: bool = True,
                progress: bool = False, fixed_arch: Architecture | None = None, verify: int = 0) -> dict[str, Any]:
    """Search, retrain and report one AdaBERT student for ``task`` under a budget on a profiled device.

    Args:
        task: a :class:`nas.data.TaskData` (the teacher must have been built on the same training examples).
        teacher_dir: a folder made by :func:`nas.teacher.train_teacher`.
        profile: a profile folder or shipped profile name (its predictor gives the latency; also used to measure).
        budget_ms: latency budget at ``ctx`` (required for ``efficiency="latency"``).
        out: the run folder (resumed if it holds this run; refused if it holds another).
        ctx: the deployment Context the budget applies to (default batch 1, seq_len 128).
        config: search and retraining settings.
        preset: the adabert preset (default: the one the profile covers).
        budget_cost: with ``efficiency`` params/flops, a budget in that unit (None: the paper's unbudgeted proxy).
        measure: time the exported model, the teacher and BERT-base on this machine at the end.
        fixed_arch: skip the search and train this architecture with the same recipe (a baseline, e.g. a random
            architecture under the budget).
        verify: with a latency budget and ``measure``, time the fitted architecture on this machine before training
            and fit again with the predictor's reading on it divided out where it lands outside [0.935, 1.00] x
            budget, at most this many measurements (:func:`nas.verify.land`; 0: the predictor's pick unmeasured).
            Only on the profile's own device; recorded in ``verify.json`` and the report.
    Returns:
        The report (also written to ``out/report.json``).
    """
    from latency.predictor import load_predictor
    from latency.profile_data import read_profile
    from nas.data import encode
    from nas.teacher import load_teacher

    cfg = config or SearchConfig()
    ctx = ctx or Context(1, 128)
    out = Path(out)
    teacher = load_teacher(teacher_dir)
    if teacher.info["num_labels"] != task.num_labels or teacher.info["pair"] != task.pair:
        raise RunError(f"{teacher_dir}: the teacher was trained for {teacher.info['num_labels']} labels "
                       f"({'pairs' if teacher.info['pair'] else 'single sentences'}), the task has {task.num_labels} "
                       f"({'pairs' if task.pair else 'single sentences'}); build a teacher on this task")
    if profile is None:
        raise RunError("--profile is required: the latency predictor (and the measuring protocol) come from it")
    prof = read_profile(profile, need_ops=False)
    predictor = load_predictor(prof.path, prof)
    cover = predictor.cover("adabert")
    space = predictor.space("adabert", preset or cover["preset"])
    if cfg.efficiency == "latency" and budget_ms is None:
        raise RunError("--budget-ms is required with --efficiency latency")
    cost = _cost_model(space, cfg.efficiency, predictor, ctx, task.num_labels)
    lat_cost = predictor.cost_matrix(space, ctx)
    (fastest, _), (slowest, _) = lat_cost.extremes()
    if budget_ms is not None:
        if not budget_ms > 0:
            raise RunError(f"--budget-ms must be positive, got {budget_ms}")
        if budget_ms < fastest:
            raise RunError(f"budget {budget_ms:g} ms is below the fastest {space.name}/{space.preset.name} "
                           f"architecture on {prof.name} at batch {ctx.batch}, seq_len {ctx.seq_len} "
                           f"({fastest:.3f} ms predicted); raise --budget-ms to at least {fastest:.3f}")
    budget = budget_ms if cfg.efficiency == "latency" else budget_cost
    if budget_cost is not None and cfg.efficiency != "latency":
        (lowest, _), _ = cost.extremes()
        if not budget_cost >= lowest:
            raise RunError(f"--budget-cost {budget_cost:g} is below the smallest {cfg.efficiency} of any "
                           f"{space.name}/{space.preset.name} architecture ({lowest:.4g}); raise it")
    eff = Efficiency(cost, budget, cfg.penalty, cfg.beta)  # checks the penalty and budget before anything runs
    settings = {"task": task.describe(), "data": task.fingerprint(), "teacher": str(Path(teacher_dir).resolve()),
                "profile": str(prof.path), "profile_name": prof.name, "space": space.name, "preset": space.preset.name,
                "budget_ms": budget_ms, "budget_cost": budget_cost, "batch": ctx.batch, "seq_len": ctx.seq_len,
                "search": dataclasses.asdict(cfg), "fixed_arch": fixed_arch.to_dict() if fixed_arch else None}
    tok = teacher.tokenizer()
    layers = teacher.num_layers
    training: dict[str, Any] = {}

    def data():
        """(teacher targets, encoded train, encoded dev), built once and only if a stage still trains."""
        if not training:
            training.update(targets=teacher.lookup(task.train), train=encode(tok, task.train, cfg.max_len),
                            dev=encode(tok, task.dev, cfg.max_len))
        return training["targets"], training["train"], training["dev"]

    if not (out / "retrain.json").is_file():
        data()  # a teacher built on other examples is refused before the folder is claimed
    claim_run_folder(out, settings, RunError)

    # 1. search (skipped for a fixed architecture)
    weights_file = out / "arch_weights.json"
    if fixed_arch is not None:
        space.indices(fixed_arch)  # validates it against the space
        probs = {d.name: torch.nn.functional.one_hot(torch.tensor(d.index(fixed_arch.choices[d.name])),
                                                     len(d.choices)).double() for d in space.decisions()}
        search_minutes = 0.0
    elif weights_file.is_file():
        saved = read_json_object(weights_file, RunError, "delete it to search again")
        probs = {k: torch.tensor(v) for k, v in saved["probabilities"].items()}
        search_minutes = saved["search_minutes"]
    else:
        net, emb_note = new_supernet(space, task.num_labels, task.pair, teacher, cfg.seed)
        targets, enc_train, _ = data()
        probs, history, search_minutes = search(net, enc_train, targets, layers, eff, cfg, out, progress)
        _write_csv(out / "history.csv", history)
        atomic_write_text(weights_file, json.dumps({"probabilities": {k: v.tolist() for k, v in probs.items()},
                                                    "search_minutes": search_minutes, "embedding_init": emb_note},
                                                   indent=1) + "\n")
        (out / "search.pt").unlink(missing_ok=True)

    # 2. derive, fit to the budget (in the search's own unit: latency, or the proxy with its budget); a latency
    # budget is aimed below by what the predictor reads low on architectures it was not fitted on
    window = (cfg.window_lo, 1 - cfg.margin)
    if cfg.efficiency == "latency":
        window = predictor.aimed_window(space.name, window)
    if fixed_arch is not None:
        argmax_arch, arch, moves = fixed_arch, fixed_arch, []
    else:
        argmax_arch = derive(space, probs)
        arch, moves = argmax_arch, []
        if budget is not None:
            arch, moves = fit_to_budget(space, probs, argmax_arch, cost, window[0] * budget, window[1] * budget)
    verified = None
    if (verify and measure and budget_ms is not None and cfg.efficiency == "latency" and fixed_arch is None
            and not (out / "retrain.json").is_file()):
        arch, moves, verified = _verify(out, space, probs, argmax_arch, cost, lat_cost, window, budget_ms, prof, ctx,
                                        task.num_labels, verify, (arch, moves))
    elif (out / "retrain.json").is_file() and (out / "verify.json").is_file():
        verified = read_json_object(out / "verify.json", RunError, "delete it to measure the pick again")
    if (out / "retrain.json").is_file() and (out / "arch.json").is_file():
        trained = Architecture.load(out / "arch.json")  # the model trained is of the architecture derived then
        if trained != arch:
            log.warning("%s/arch.json: this predictor would now derive another architecture; kept the trained one "
                        "(delete retrain.json to retrain)", out)
            prev = out / "report.json"
            moves = read_json_object(prev, RunError, "delete it").get("budget_moves", []) if prev.is_file() else []
            arch = trained
    arch.save(out / "arch.json")
    idx = space.indices(arch)
    predicted = lat_cost.value(idx)

    # 3. retrain
    model_dir = out / "model"
    retrain_file = out / "retrain.json"
    if retrain_file.is_file():
        saved = read_json_object(retrain_file, RunError, "delete it to retrain again")
        acc, retrain_minutes = saved["student_accuracy"], saved["retrain_minutes"]
    else:
        targets, enc_train, enc_dev = data()
        student = new_student(space, arch, task.num_labels, task.pair, teacher, cfg.seed)
        acc, rhist, retrain_minutes = retrain(student, arch.choices["cells"], enc_train, enc_dev, targets, layers,
                                              cfg, out, progress)
        _write_csv(out / "retrain.csv", rhist)
        from nas.modeling import save_pretrained

        save_pretrained(student, arch, model_dir, task.num_labels, task.pair,
                        extra_card={"task": task.name, "device_profile": prof.name, "budget_ms": budget_ms,
                                    "batch": ctx.batch, "seq_len": ctx.seq_len, "predicted_latency_ms": predicted,
                                    "dev_accuracy": acc, "teacher": str(teacher_dir)})
        atomic_write_text(retrain_file, json.dumps({"student_accuracy": acc, "retrain_minutes": retrain_minutes}))
        (out / "retrain.pt").unlink(missing_ok=True)

    # 4. export (with the parity check), tokenizer beside the model for users
    from nas.export import export_cli

    if not (out / "model.onnx").is_file():
        export_cli(out / "arch.json", out / "model.onnx", weights=model_dir)
    if not (model_dir / "tokenizer.json").is_file():
        tok.save_pretrained(model_dir)

    report = {
        "task": task.name, "source": "fixed" if fixed_arch is not None else "search", "space": space.name,
        "preset": space.preset.name, "profile": prof.name,
        "efficiency": cfg.efficiency, "penalty": cfg.penalty, "batch": ctx.batch, "seq_len": ctx.seq_len,
        "teacher_accuracy": teacher.info["teacher_accuracy"], "student_accuracy": acc,
        "params": space.params(arch, task.num_labels), "flops": space.flops(arch, ctx, task.num_labels),
        "budget_ms": budget_ms, "budget_cost": budget_cost, "predicted_latency_ms": predicted,
        "aimed_window": list(window) if budget is not None and fixed_arch is None else None,
        "predictor_under_q90": predictor.under_q90(space.name),
        "argmax_arch": argmax_arch.to_dict(), "argmax_predicted_latency_ms": lat_cost.value(space.indices(argmax_arch)),
        "budget_moves": moves, "arch_log_prob": log_prob(space, probs, arch),
        "verify": verified,
        "fastest_ms": fastest, "slowest_ms": slowest,
        "search_minutes": search_minutes, "retrain_minutes": retrain_minutes,
        "teacher_params": teacher.info["params"], "train_examples": len(task.train), "dev_examples": len(task.dev),
    }
    old = out / "report.json"
    if old.is_file():  # keep measurements already taken
        prev = read_json_object(old, RunError, "delete it to report again")
        report.update({k: v for k, v in prev.items() if k.startswith(("measured", "speedup", "bert_base", "teacher_latency",
                                                                      "budget_met", "budget_ratio", "measure"))})
    if measure and report.get("measured_latency_ms") is None:
        from nas.adabert.measure import measure_report

        report.update(measure_report(out, prof, ctx, teacher_dir, predicted))
    elif "measured_latency_ms" not in report:
        report.update(dict.fromkeys(("measured_latency_ms", "teacher_latency_ms", "bert_base_latency_ms",
                                     "speedup_vs_teacher", "speedup_vs_bert_base", "budget_met", "budget_ratio")))
        report["measure_note"] = "not measured yet: run `hwnas search adabert` again without --no-measure"
    if (out / "history.csv").is_file():  # the op distribution per search epoch (collapse watch)
        h = pd.read_csv(out / "history.csv")
        cols = [c for c in h.columns if c.startswith("p_")] + ["expected_cells", "expected_cost"]
        report["op_distribution_per_epoch"] = h[h["epoch_end"]][["epoch", *cols]].round(4).to_dict("records")
    if report.get("measured_latency_ms") is not None:
        from nas.modeling import update_card

        update_card(model_dir, {k: report.get(k) for k in ("measured_latency_ms", "speedup_vs_teacher",
                                                           "speedup_vs_bert_base", "budget_met", "measure_note",
                                                           "measure_protocol")})
    atomic_write_text(out / "report.json", json.dumps(report, indent=2, default=str) + "\n")
    return report


def load_arch(out: str | os.PathLike) -> Architecture:
    return Architecture.load(Path(out) / "arch.json")


__all__ = ["run_adabert", "RunError", "load_arch"]
