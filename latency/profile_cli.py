"""The ``hwnas profile`` and ``hwnas measure`` commands: parse options into a :class:`ProfileConfig`, run, print.

Examples:
    hwnas profile --backend onnxruntime --threads 1 --space adabert,nasbert --out profiles/mycpu
    hwnas profile --space adabert,nasbert --preset tiny --quick --out /tmp/demo-profile
    hwnas measure arch.json --backend onnxruntime --threads 1 --batch 8 --seq-len 128 --json
"""
from __future__ import annotations

from dataclasses import replace

from latency.measure import cuda_protocol, quick_protocol
from latency.profiler import (
    CUDA_BATCH,
    CUDA_SEQ_LEN,
    DEFAULT_BATCH,
    DEFAULT_E2E,
    DEFAULT_SEQ_LEN,
    QUICK_BATCH,
    QUICK_E2E,
    QUICK_SEQ_LEN,
    ProfileConfig,
    run_profile,
)
from latency.stats import Protocol
from latency.table import ProfileError
from nas.spaces.ops import Context


def parse_spaces(space: str, preset: str | None) -> tuple[tuple[str, str | None], ...]:
    """``--space adabert,nasbert`` with ``--preset tiny`` (all) or ``--preset adabert=tiny,nasbert=small``."""
    names = [s.strip() for s in space.split(",") if s.strip()]
    if not names:
        raise ProfileError("--space is empty; name one or more spaces, e.g. --space adabert,nasbert")
    per: dict[str, str] = {}
    if preset and "=" in preset:
        for item in preset.split(","):
            k, _, v = item.partition("=")
            per[k.strip()] = v.strip()
        unknown = sorted(set(per) - set(names))
        if unknown:
            raise ProfileError(f"--preset names {unknown}, which are not in --space {space}")
    return tuple((n, per.get(n) if per else preset) for n in names)


def config_from_args(args) -> ProfileConfig:
    quick, cuda = bool(getattr(args, "quick", False)), args.device == "cuda"
    if getattr(args, "minutes", None) is not None:
        raise ProfileError("--minutes bounds a --transfer-from measurement; a full profile measures every entry "
                           "(use --quick for a short one)")
    protocol = cuda_protocol(Protocol(seed=args.seed)) if cuda else Protocol(seed=args.seed)
    if getattr(args, "statistic", None):
        protocol = replace(protocol, statistic=args.statistic)
    if getattr(args, "allocator", None):
        protocol = replace(protocol, allocator=args.allocator)
    if getattr(args, "visit_processes", None):
        protocol = replace(protocol, visit_processes=args.visit_processes)
    if getattr(args, "probe", None):
        protocol = replace(protocol, probe=args.probe)
    return ProfileConfig(
        backend=args.backend, device=args.device, threads=args.threads, spaces=parse_spaces(args.space, args.preset),
        batch=tuple(args.batch or (QUICK_BATCH if quick else CUDA_BATCH if cuda else DEFAULT_BATCH)),
        seq_len=tuple(args.seq_len or (QUICK_SEQ_LEN if quick else CUDA_SEQ_LEN if cuda else DEFAULT_SEQ_LEN)),
        e2e=args.e2e if args.e2e is not None else (QUICK_E2E if quick else DEFAULT_E2E), seed=args.seed,
        protocol=quick_protocol(protocol) if quick else protocol, quick=quick,
        search_like=(not quick) if getattr(args, "search_like", None) is None else args.search_like,
    )


def transfer_main(args) -> dict:
    """``hwnas profile --transfer-from SRC``: the short measurement, then the new device's predictor."""
    from latency.profile_data import read_profile
    from latency.transfer import fit_transfer, transfer_config

    given = [f for f, v in (("--batch", args.batch), ("--seq-len", args.seq_len), ("--quick", args.quick),
                            ("--preset", args.preset), ("--search-like", getattr(args, "search_like", None)))
             if v not in (None, False)]
    if given:
        raise ProfileError(f"--transfer-from takes the spaces and grid of the source profile; drop {', '.join(given)}")
    src = read_profile(args.transfer_from)
    cfg = transfer_config(src, args.backend, args.device, args.threads, args.e2e, args.seed,
                          getattr(args, "minutes", None))
    for name in ("visit_processes", "probe"):
        if getattr(args, name, None):
            cfg = replace(cfg, protocol=replace(cfg.protocol, **{name: getattr(args, name)}))
    result = run_profile(cfg, args.out, force_new=args.force_new, progress=not args.json)
    new = read_profile(result["out"])
    pred = fit_transfer(src, new)
    pred.save(new.path / "predictor.json")
    result["predictor"] = {"kind": pred.kind, "path": str(new.path / "predictor.json"), "source": src.name,
                           "calibration_rows": pred.meta.get("calibration_rows")}
    return result


def profile_main(args) -> int:
    """``hwnas profile``: measure or resume, then print the summary (``--json``: one object)."""
    import json
    import sys

    if getattr(args, "close_partial", None) is not None:
        from latency.profiler import close_partial

        result = close_partial(args.out, args.close_partial)
    elif getattr(args, "transfer_from", None):
        result = transfer_main(args)
    else:
        result = run_profile(config_from_args(args), args.out, force_new=args.force_new, progress=not args.json)
    if args.json:
        print(json.dumps(result))
        return 0
    r, rt, roof = result, result["retest"], result["roofline"]
    print(f"wrote {r['out']}: {r['ops_rows']} op rows, {r['e2e_rows']} e2e rows "
          f"({r['visits_measured_now']} visits measured now, {r['wall_s']} s)")
    if r.get("budget"):
        bu = r["budget"]
        print(f"measuring budget {bu['budget_s']} s: {bu['visits_skipped']} visits skipped, "
              f"{bu['rows_from_fewer_visits']} rows from fewer visits, {bu['entries_unmeasured']} entries unmeasured")
    if r["status"] == "partial":
        print(f"closed as partial, missing {r['missing']}; the same command on its device resumes it")
    print(f"median CV {r['median_cv']}; retest on {rt.get('n')} entries: median |diff| "
          f"{rt.get('median_abs_diff_pct')} %, p90 {rt.get('p90_abs_diff_pct')} %")
    print(f"roofline: peak {r['peak_gflops']} GFLOP/s, bandwidth {r['bandwidth_gbs']} GB/s; ops at median "
          f"{roof.get('median_pct_of_bound')} % of their bound")
    if r.get("predictor"):
        pr = r["predictor"]
        print(f"wrote {pr['path']} ({pr['kind']}): {pr['source']}'s op table scaled to this device, calibrated on "
              f"{pr['calibration_rows']} whole-model rows")
    if roof.get("n_faster_than_bound"):
        print(f"warning: {roof['n_faster_than_bound']} entries faster than their roofline bound (broken timer or "
              f"FLOP/byte count?), e.g. {roof['faster_than_bound'][:3]}; see roofline.csv", file=sys.stderr)
    return 0


def merge_main(args) -> int:
    """``hwnas merge-profiles A B [C ...] --out M``: one profile from several sittings (:mod:`latency.merge`)."""
    import json

    from latency.merge import merge_profiles

    result = merge_profiles(args.profiles, args.out)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"wrote {result['out']}: {result['ops_rows']} op rows, {result['e2e_rows']} e2e rows "
          f"({result['e2e_in_every_sitting']} of them measured in every sitting)")
    for s in result["sittings"]:
        print(f"  {s['name']} ({s['created']}): ops x{s['ops_factor']:.4f} over {s['ops_shared']} shared entries, "
              f"whole models x{s['e2e_factor']:.4f} over {s['e2e_shared']} against the first, divided out")
    print(f"next: hwnas fit {result['out']}")
    return 0


def measure_main(args) -> int:
    """``hwnas measure arch.json``: one architecture end to end under the default protocol."""
    import json

    from latency.measure import fault_warning, measure_arch, probe_reference
    from nas.arch import Architecture

    processes = getattr(args, "processes", 1)
    if processes < 1:
        raise ProfileError(f"--processes must be at least 1, got {processes}")
    arch = Architecture.load(args.arch)
    backend, device, threads = args.backend, args.device or "cpu", args.threads
    protocol = cuda_protocol(Protocol()) if device == "cuda" else Protocol()
    reference = None
    if getattr(args, "profile", None):  # the profile's backend, threads and protocol: comparable with its rows
        from latency.table import check_device_here, read_meta, resolve

        meta = read_meta(resolve(args.profile))
        check_device_here(args.profile, meta, args.device)  # a --device given must be the profile's
        b = meta["backend"]
        backend, device, threads = b["name"], b.get("device", "cpu"), int(b["threads"])
        protocol = Protocol.from_dict(meta["protocol"])
        reference = probe_reference(meta)
    ctx = Context(args.batch, args.seq_len)
    if processes > 1:
        r = measure_in_processes(args, processes)
    else:
        r = measure_arch(arch, ctx, backend=backend, device=device, threads=threads, protocol=protocol,
                         probe_reference_ms=reference)
        r["protocol"] = protocol.to_dict()
        r["fault_warning"] = fault_warning(r)
    if getattr(args, "profile", None):
        r.update(_against_profile(args.profile, arch, ctx, r["latency_p50_ms"], faulted=bool(r["fault_warning"]),
                                  at_reference_ms=r.get("latency_at_reference_ms")))
    if args.json:
        print(json.dumps(r))
    else:
        print(f"{args.arch} ({r['space']}/{r['preset']}) at batch {r['batch']}, seq_len {r['seq_len']} on "
              f"{r['backend']} {r['version']} ({r['device']}, {r['threads']} threads): p50 {r['latency_p50_ms']:.3f} ms "
              f"(p10 {r['latency_p10_ms']:.3f}, p90 {r['latency_p90_ms']:.3f}, CV {r['cv']:.3f}, {r['n_runs']} runs"
              + (f", {r['faults_per_run']:g} page faults per run" if r.get("faults_per_run") is not None else "")
              + f"; allocator {r['allocator']})")
        if r.get("processes"):
            per = r["processes"]
            print(f"median of {per['n']} fresh processes: p50 " + " / ".join(f"{x:.3f}" for x in per["latency_p50_ms"])
                  + f" ms (slowest / fastest {per['slowest_over_fastest']:.3f})")
        if r.get("latency_at_reference_ms") is not None:
            print(f"at {args.profile}'s reference speed (the probe read this machine "
                  f"{100 * (r['probe_vs_reference'] - 1):+.1f} % against it): p50 {r['latency_at_reference_ms']:.3f} ms")
        if r.get("predicted_latency_ms") is not None:
            print(f"{args.profile} predicts {r['predicted_latency_ms']:.3f} ms: measured {r['measured_vs_predicted']:.3f}x"
                  + (f" (at its reference speed {r['at_reference_vs_predicted']:.3f}x its prediction before any "
                     f"recheck factor)" if r.get("at_reference_vs_predicted") is not None else ""))
        for w in ("speed_warning", "fault_warning"):
            if r.get(w):
                print("warning: " + r[w])
    return 0


def measure_in_processes(args, n: int) -> dict:
    """``hwnas measure`` run in ``n`` fresh processes one after the other, each as a plain ``--json`` call with the
    same options: eager torch draws a speed per process and shape (up to 1.85x for one convolution, a median 3 % for
    whole AdaBERT models at batch 8-32, ``benchmarks/process_states.py``), so one process's figure is one draw. The
    result is the first process's, with its percentiles and CV the medians over processes, ``n_runs`` their sum, and
    ``processes``: each one's p50 and the slowest / fastest."""
    import json
    import statistics
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "nas.cli", "measure", args.arch, "--backend", args.backend, "--threads",
           str(args.threads), "--batch", str(args.batch), "--seq-len", str(args.seq_len), "--json"]
    if args.device:
        cmd += ["--device", args.device]
    if getattr(args, "profile", None):
        cmd += ["--profile", args.profile]
    runs = []
    for i in range(n):
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            last = (out.stderr.strip().splitlines() or ["no message"])[-1]
            raise ProfileError(f"hwnas measure: process {i + 1} of {n} failed: {last}")
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    p50 = [float(x["latency_p50_ms"]) for x in runs]
    warnings = [x["fault_warning"] for x in runs if x.get("fault_warning")]
    faults = [x["faults_per_run"] for x in runs if x.get("faults_per_run") is not None]
    return {**runs[0], **{k: statistics.median(float(x[k]) for x in runs) for k in
                          ("latency_p50_ms", "latency_p10_ms", "latency_p90_ms", "cv", "probe_ms",
                           "probe_vs_reference", "latency_at_reference_ms") if k in runs[0]},
            "n_runs": sum(int(x["n_runs"]) for x in runs), "faults_per_run": statistics.median(faults) if faults else None,
            "fault_warning": warnings[0] if warnings else None,
            "processes": {"n": n, "latency_p50_ms": p50, "slowest_over_fastest": max(p50) / min(p50)}}


def _against_profile(profile: str, arch, ctx: Context, measured_ms: float, faulted: bool = False,
                     at_reference_ms: float | None = None) -> dict:
    """What ``profile``'s predictor says of ``arch`` at ``ctx`` next to the measurement: ``predicted_latency_ms``,
    ``measured_vs_predicted`` and ``speed_warning`` (None within tolerance); ``predictor_note`` instead when the
    profile has no usable predictor or it does not cover the architecture. With ``at_reference_ms`` (the
    measurement at the profile's reference probe speed) also ``at_reference_vs_predicted``, against the prediction
    without the speed factor a recheck may have written (the rows the predictor was fitted on are at that speed)."""
    from latency.measure import speed_ratio, speed_warning
    from latency.predictor import load_predictor
    from latency.table import resolve
    from nas.errors import HwnasError

    try:
        pred = load_predictor(resolve(profile))
        predicted = float(pred.predict(arch, ctx))
    except HwnasError as e:
        return {"predicted_latency_ms": None, "predictor_note": str(e)}
    ratio = speed_ratio([(predicted, measured_ms)])
    out = {"predicted_latency_ms": predicted, "measured_vs_predicted": ratio,
           "speed_warning": speed_warning(ratio, profile, faulted=faulted)}
    if at_reference_ms is not None:
        out["at_reference_vs_predicted"] = speed_ratio([(predicted / pred.speed, at_reference_ms)])
    return out
