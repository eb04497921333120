"""Backends: registry, every op of the tiny spaces runs at two Contexts on one prepared graph, thread handling,
the library measure_arch, and the CUDA paths (marked gpu, skipped without CUDA)."""
import sys

import numpy as np
import pytest
import torch

from latency.backends import BACKEND_REGISTRY, BackendError, get_backend
from latency.device import fingerprint
from latency.measure import EXPORT_CTX, measure_arch
from latency.stats import Protocol
from nas.spaces import Context, get_space
from nas.spaces.ops import build_op, get_op

TINY_OPS = sorted({s for n in ("adabert", "nasbert") for s in get_space(n, "tiny").unique_ops()}, key=lambda s: s.key)
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
FAST = Protocol(min_runs=3, time_cap_s=0.05, e2e_time_cap_s=0.1, warmup_min_s=0.0)


def inputs(spec, ctx):
    return get_op(spec.kind).example_inputs(spec, ctx, torch.Generator().manual_seed(0))


def test_registry_and_errors():
    assert {"onnxruntime", "torch"} <= set(BACKEND_REGISTRY)
    with pytest.raises(BackendError, match="unknown backend 'tvm'; choose one of"):
        get_backend("tvm")
    with pytest.raises(BackendError, match="at least 1"):
        get_backend("torch", threads=0)
    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match="--device cuda: .*(CPU-only build|sees no GPU)"):
            get_backend("torch", device="cuda")
    assert get_backend("ort").name == "onnxruntime"


def test_missing_cuda_says_what_and_how(monkeypatch):
    """No GPU, or a CPU build of torch or onnxruntime: one line naming what is missing and the install line."""
    import latency.backends.onnxruntime as ortb
    from latency.backends.base import cuda_problem

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    msg = cuda_problem()
    assert "CPU-only build" in msg and "pip install torch" in msg and "\n" not in msg
    with pytest.raises(BackendError, match="CPU-only build"):
        get_backend("torch", device="cuda")
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    assert "sees no GPU" in cuda_problem() and "nvidia-smi" in cuda_problem()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert cuda_problem() is None
    monkeypatch.setattr(ortb._ort(), "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(BackendError, match="no CUDAExecutionProvider .*pip install onnxruntime-gpu=="):
        get_backend("onnxruntime", device="cuda")


def test_a_profile_of_another_device_kind_is_refused_here(monkeypatch):
    from latency.table import ProfileError, check_device_here

    gpu = {"backend": {"device": "cuda"}, "device": {"gpu": "NVIDIA H200"}}
    cpu = {"backend": {"device": "cpu"}, "device": {"cpu_model": "AMD EPYC", "cores": 2}}
    with pytest.raises(ProfileError, match="is a CUDA profile, measured on cuda \\(NVIDIA H200\\); .*--device cpu"):
        check_device_here("h200", gpu, device="cpu")
    with pytest.raises(ProfileError, match="is a CPU profile, measured on cpu \\(AMD EPYC, 2 cores\\)"):
        check_device_here("epyc", cpu, device="cuda")
    check_device_here("epyc", cpu, device="cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ProfileError, match="is a GPU profile.*cannot run CUDA"):
        check_device_here("h200", gpu)


@pytest.mark.parametrize("name", ["onnxruntime", "torch"])
def test_backend_info(name):
    info = get_backend(name, threads=2).info()
    assert {"name", "version", "device", "provider", "threads", "graph_optimization", "dtype"} <= set(info)
    assert info["threads"] == 2 and info["version"]


@pytest.mark.parametrize("spec", TINY_OPS, ids=lambda s: s.key)
def test_every_tiny_op_runs_on_onnxruntime_at_two_contexts(spec):
    torch.manual_seed(0)
    module = build_op(spec).eval()
    with get_backend("onnxruntime") as be:
        r = be.prepare(module, inputs(spec, EXPORT_CTX))
        for ctx in (Context(1, 8), Context(3, 24)):
            x = inputs(spec, ctx)
            be.bind(r, x)
            t = be.time(r, 3)
            assert len(t) == 3 and all(v > 0 for v in t)
            got = r.session.run(None, r.feed)[0]
            with torch.no_grad():
                ref = module(*x.values()).numpy()
            assert got.shape == ref.shape
            np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-3)


def test_torch_backend_times_and_restores_threads():
    spec = next(s for s in TINY_OPS if s.kind == "ffn")
    be = get_backend("torch", threads=1)
    before = torch.get_num_threads()
    r = be.prepare(build_op(spec), inputs(spec, EXPORT_CTX))
    be.bind(r, inputs(spec, Context(2, 16)))
    t = be.time(r, 4)
    assert len(t) == 4 and min(t) > 0
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_measure_arch_library_function(backend):
    arch = get_space("adabert", "tiny").sample(2)
    r = measure_arch(arch, Context(2, 16), backend=backend, protocol=FAST)
    assert r["latency_p10_ms"] <= r["latency_p50_ms"] <= r["latency_p90_ms"] and r["n_runs"] >= 3
    assert r["backend"] == backend and r["threads"] == 1 and r["flops"] > 0 and r["params"] > 0


class FreshPages(torch.nn.Module):
    """Touches ``pages`` freshly mapped 4 KiB pages per run (huge pages off for the mapping): one minor fault each."""

    def __init__(self, pages: int) -> None:
        super().__init__()
        self.pages = pages

    def forward(self, x):
        import mmap

        if not self.pages:
            return x
        m = mmap.mmap(-1, self.pages * 4096)
        if hasattr(mmap, "MADV_NOHUGEPAGE"):
            m.madvise(mmap.MADV_NOHUGEPAGE)
        for i in range(0, self.pages * 4096, 4096):
            m[i] = 1
        m.close()
        return x


@pytest.mark.skipif(sys.platform != "linux", reason="counts page faults with Linux's getrusage")
def test_measure_in_rounds_counts_the_page_faults_of_the_timed_runs():
    """``faults_per_run`` is what the runs themselves take: a module touching 2,000 fresh pages per run reads about
    that many and warns; one touching none reads few and does not."""
    from latency.measure import FAULT_WARN_PER_RUN, fault_warning, measure_in_rounds

    be = get_backend("torch")
    x = {"x": torch.zeros(4)}
    r = measure_in_rounds(be, {"fresh": be.prepare(FreshPages(2000), x), "none": be.prepare(FreshPages(0), x)}, FAST)
    assert 1900 <= r["fresh"]["faults_per_run"] <= 2200
    assert r["none"]["faults_per_run"] < FAULT_WARN_PER_RUN / 10
    assert "fresh pages" in fault_warning({**r["fresh"], "device": "cpu"})
    assert fault_warning({**r["none"], "device": "cpu"}) is None
    assert fault_warning({**r["fresh"], "device": "cuda"}) is None  # host pages say nothing of a GPU's time


def test_fingerprint_has_the_protocol_fields(monkeypatch):
    fp = fingerprint(threads=1)
    for k in ("cpu_model", "cores", "governor", "gpu", "gpu_driver", "os", "python", "torch", "onnxruntime", "numpy",
              "allocator_env"):
        assert k in fp
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_max=0")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert {"GLIBC_TUNABLES": "glibc.malloc.mmap_max=0", "MALLOC_ARENA_MAX": "2"}.items() <= \
        fingerprint(threads=1)["allocator_env"].items()


# ------------------------------------------------------------------------------------------------- CUDA
@pytest.mark.gpu
@CUDA
def test_torch_cuda_uses_events():
    spec = next(s for s in TINY_OPS if s.kind == "mha")
    be = get_backend("torch", device="cuda")
    r = be.prepare(build_op(spec), inputs(spec, EXPORT_CTX))
    be.bind(r, inputs(spec, Context(8, 64)))
    assert all(a.is_cuda for a in r.args)
    t = be.time(r, 5)
    assert len(t) == 5 and min(t) > 0


@pytest.mark.gpu
@CUDA
def test_onnxruntime_cuda_io_binding():
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime without the CUDA execution provider (install onnxruntime-gpu)")
    spec = next(s for s in TINY_OPS if s.kind == "ffn")
    with get_backend("onnxruntime", device="cuda") as be:
        assert be.info()["provider"] == "CUDAExecutionProvider"
        r = be.prepare(build_op(spec), inputs(spec, EXPORT_CTX))
        be.bind(r, inputs(spec, Context(8, 64)))
        assert r.binding is not None
        t = be.time(r, 5)
        assert len(t) == 5 and min(t) > 0


@pytest.mark.gpu
@CUDA
def test_cuda_settle_fingerprint_and_roofline():
    """The clock warm-up reaches a steady probe time, the fingerprint names the GPU and its software, and the
    GPU roofline's ceilings are a GPU's (far above any CPU's) with its own larger probes."""
    from latency.roofline import measure_roofline

    be = get_backend("torch", device="cuda")
    s = be.settle()
    assert s["device"] == "cuda" and s["seconds"] >= 2.0 and s["probe_ms_last"] > 0 and be.settle() is s
    fp = fingerprint(threads=1)
    assert fp["gpu"] and fp["gpu_driver"] and fp["gpu_memory_gb"] > 1 and fp["cuda"] and "gpu_capability" in fp
    info = be.info()
    assert info["provider"] == "cuda" and "CUDA events" in info["timer"] and "not timed" in info["inputs"]
    roof = measure_roofline(be, FAST)
    assert roof["peak_gflops"] > 5_000 and roof["dram_bandwidth_gbs"] > 500
    assert max(r["m"] for r in roof["matmul"]) >= 8192


@pytest.mark.gpu
@CUDA
def test_measure_arch_on_cuda():
    arch = get_space("nasbert", "tiny").sample(0)
    r = measure_arch(arch, Context(4, 32), backend="torch", device="cuda", protocol=FAST)
    assert r["device"] == "cuda" and r["latency_p50_ms"] > 0


def _run_node_types(path, tmp_path, disabled=()) -> set[str]:
    """The node types onnxruntime actually runs for the graph at ``path`` (after its fusions)."""
    import onnx

    from nas.export import ort_session

    out = tmp_path / f"{path.stem}.opt.onnx"
    ort_session(path, disabled_optimizers=disabled, optimized_path=out)
    return {n.op_type for n in onnx.load(str(out)).graph.node}


def test_op_graphs_get_only_the_fusions_whole_models_get(tmp_path):
    """An op is timed as it runs inside a model: every kernel its timing graph runs also runs in whole models of
    that op, and the Add + LayerNorm fusion a model never gets is kept out (with it, the op graph differs)."""
    from latency.backends.onnxruntime import OP_GRAPH_DISABLED
    from nas.arch import Architecture
    from nas.export import export_arch

    space = get_space("nasbert", "tiny")
    p = space.preset
    with get_backend("onnxruntime") as be:
        be.use_workdir(tmp_path)
        assert be.info()["op_graph_disabled_optimizers"] == list(OP_GRAPH_DISABLED)
        for template in p.op_templates():
            arch = Architecture(space.name, space.version, p.name,
                                {**{f"block{b}.hidden": p.hiddens[0] for b in range(p.blocks)},
                                 **{f"layer{i}.op": template for i in range(p.layers)}})
            model = _run_node_types(export_arch(arch, tmp_path / "model.onnx"), tmp_path)
            for spec in space.arch_ops(arch):
                if spec.kind == "identity":  # a bare pass-through graph; a model runs nothing for it
                    continue
                r = be.prepare(build_op(spec).eval(), inputs(spec, EXPORT_CTX))
                assert r.disabled == OP_GRAPH_DISABLED
                op = _run_node_types(r.path, tmp_path, r.disabled)
                assert op <= model, f"{spec.key}: kernels {sorted(op - model)} run in its timing graph, not in a model"
                if spec.kind in ("ffn", "mha"):  # the fusion the list keeps out does fire on a bare op graph
                    assert "SkipLayerNormalization" in _run_node_types(r.path, tmp_path) - model
