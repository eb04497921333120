"""Device fingerprint: what a latency measurement depends on (CPU, cores, GPU, driver, library versions, threads).

Two profiles may only be merged, or one resumed, when their fingerprints agree on :data:`COMPAT_FIELDS`.

>>> fp = fingerprint(threads=1)
>>> fp["threads"], fp["cores"] > 0, bool(fp["cpu_model"])
(1, True, True)
>>> cpu_slug("Intel(R) Core(TM) i7-10700K CPU @ 3.80GHz", 8)
'intel-core-i7-10700k-8c'
>>> cpu_slug("AMD EPYC", 2, "AuthenticAMD 26/2/1 avx2 avx512f")  # a VM that masks the model number
'amd-epyc-f26m2-2c'
"""
from __future__ import annotations

import os
import platform
import re
from importlib import metadata
from pathlib import Path

# fingerprint fields that must be equal for two sets of measurements to be comparable
COMPAT_FIELDS = (
    "cpu_model", "cores", "machine", "gpu", "gpu_driver", "python", "torch", "onnxruntime", "numpy",
)  # fmt: skip
# ... and those compared only where both sides recorded them (profiles made before hwnas recorded cpu_id lack it;
# their hashes and comparisons are as before)
OPTIONAL_COMPAT_FIELDS = ("cpu_id",)
# the vector extensions that decide how fast a CPU runs these models (onnxruntime and torch pick kernels by them)
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16", "asimd", "sve")
LIBRARIES = {"torch": ("torch",), "onnxruntime": ("onnxruntime", "onnxruntime-gpu"), "numpy": ("numpy",)}


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _cpuinfo() -> dict[str, str]:
    """/proc/cpuinfo's fields, each at its first non-empty value, in the file's order (on x86 the first
    processor's block; on ARM also the machine lines after the blocks); empty where there is no such file."""
    info: dict[str, str] = {}
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        key, _, value = line.partition(":")
        if value.strip():
            info.setdefault(key.strip(), value.strip())
    return info


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    for key, value in _cpuinfo().items():
        if key in ("model name", "Model", "Hardware", "cpu model"):
            return value
    return platform.processor() or platform.machine() or "unknown-cpu"


def cpu_id() -> str | None:
    """The CPU's identity beyond its name: vendor, family/model/stepping and vector extensions from /proc/cpuinfo
    (``"AuthenticAMD 26/2/1 avx2 avx512f avx512_vnni avx512_bf16"``); None where the kernel does not say.

    Virtual machines often mask the name (``"AMD EPYC"``): on this project's 2-core VMs two hosts under that one
    name ran onnxruntime 2x apart (a Zen 5 with AVX-512, family 26, against an earlier host), which only the family
    and the extensions tell apart.
    """
    info = _cpuinfo()
    vendor = info.get("vendor_id") or info.get("CPU implementer")
    if not vendor:
        return None
    nums = "/".join(info.get(k, "?") for k in ("cpu family", "model", "stepping")) if "cpu family" in info else \
        "/".join(info.get(k, "?") for k in ("CPU architecture", "CPU part", "CPU revision"))
    flags = set((info.get("flags") or info.get("Features") or "").split())
    return " ".join([vendor, nums, *(f for f in ISA_FLAGS if f in flags)])


def governor() -> str | None:
    """The CPU frequency governor of cpu0, or None where the kernel does not expose it (VMs, containers)."""
    return _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")


def library_version(name: str) -> str | None:
    for dist in LIBRARIES.get(name, (name,)):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def gpu_info() -> tuple[str | None, str | None]:
    """(GPU name, NVIDIA driver version) when torch sees a CUDA device, else (None, None)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return None, None
    if not torch.cuda.is_available():
        return None, None
    name = torch.cuda.get_device_name(0)
    text = _read("/proc/driver/nvidia/version") or ""
    m = re.search(r"Kernel Module(?:\s+for\s+\S+)?\s+([\d.]+)", text)
    driver = m.group(1) if m else (nvidia_smi_query("driver_version") or f"cuda-runtime-{torch.version.cuda}")
    return name, driver


def nvidia_smi_query(*fields: str) -> str | None:
    """``nvidia-smi --query-gpu=FIELDS`` of GPU 0 as one comma-separated line, or None where nvidia-smi is missing
    or fails (e.g. ``clocks.sm,clocks.mem,temperature.gpu,power.draw``)."""
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits",
                              "--id=0"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def gpu_details() -> dict:
    """What else a GPU measurement depends on, informative (not in :data:`COMPAT_FIELDS`: the torch version
    string already names its CUDA build): memory, compute capability, multiprocessors, the CUDA runtime torch was
    built with, cuDNN, and whether fp32 matmuls may use TF32. Empty without a CUDA device."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return {}
    if not torch.cuda.is_available():
        return {}
    p = torch.cuda.get_device_properties(0)
    return {
        "gpu_memory_gb": round(p.total_memory / 2**30, 1),
        "gpu_capability": f"{p.major}.{p.minor}",
        "gpu_multiprocessors": p.multi_processor_count,
        "gpu_count": torch.cuda.device_count(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
    }


def gpu_clocks() -> dict | None:
    """GPU 0's SM and memory clocks (MHz), temperature (C) and power (W) now, from nvidia-smi (None without it):
    a GPU profile records them at the start and end of each session and every 15 s of measuring (``clocks.csv``),
    to show whether the clocks were up while it measured."""
    line = nvidia_smi_query("clocks.sm", "clocks.mem", "temperature.gpu", "power.draw")
    if not line:
        return None
    names = ("sm_mhz", "mem_mhz", "temperature_c", "power_w")
    out = {}
    for k, v in zip(names, (x.strip() for x in line.split(","))):
        try:
            out[k] = float(v)
        except ValueError:
            out[k] = v
    return out


def affinity_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def allocator_env() -> dict[str, str] | None:
    """The environment variables that change the C memory allocator (``GLIBC_TUNABLES``, ``MALLOC_*``, an
    ``LD_PRELOAD``ed malloc), None when none is set. Eager torch's CPU latency depends on them (a model at batch 32 x
    256 tokens ran 2.3x faster with glibc's mmap off: ``benchmarks/README.md``, *page faults*), so a profile records
    them; informative, not compared.

    >>> import os; os.environ["MALLOC_ARENA_MAX"] = "2"; allocator_env()["MALLOC_ARENA_MAX"]
    '2'
    >>> del os.environ["MALLOC_ARENA_MAX"]
    """
    env = {k: v for k, v in os.environ.items() if k in ("GLIBC_TUNABLES", "LD_PRELOAD") or k.startswith("MALLOC_")}
    return env or None


def fingerprint(threads: int | None = None) -> dict:
    """Describe this machine and its libraries.

    Args:
        threads: the fixed intra-op thread count of the measurement (None: not fixed, e.g. ``hwnas env``).
    Returns:
        A JSON-able dict: cpu_model, cpu_id (:func:`cpu_id`), cores, cpu_affinity, governor, gpu, gpu_driver, os, machine, python,
        torch, onnxruntime, numpy, threads, allocator_env (:func:`allocator_env`); with a CUDA device also
        :func:`gpu_details` (memory, capability, CUDA, cuDNN, TF32).
    """
    gpu, driver = gpu_info()
    details = gpu_details() if gpu else {}
    return {
        "cpu_model": cpu_model(),
        "cpu_id": cpu_id(),
        "cores": os.cpu_count() or 1,
        "cpu_affinity": affinity_cores(),  # cores this process may run on (taskset); informative only
        "governor": governor(),
        "gpu": gpu,
        "gpu_driver": driver,
        "os": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": library_version("torch"),
        "onnxruntime": library_version("onnxruntime"),
        "numpy": library_version("numpy"),
        "threads": threads,
        "allocator_env": allocator_env(),  # informative only
        **details,
    }


_NOISE = re.compile(r"\((r|tm|c)\)|\b(cpu|processor|with .*graphics|\d+-core)\b|@.*$", re.IGNORECASE)


def slug(text: str) -> str:
    """Lower-case words joined by '-' (``"NVIDIA H100 80GB HBM3"`` -> ``"nvidia-h100-80gb-hbm3"``)."""
    return "-".join(re.findall(r"[a-z0-9]+", _NOISE.sub(" ", text).lower())) or "unknown"


def cpu_slug(model: str, cores: int, cpu_id: str | None = None) -> str:
    """``<model>-<cores>c``; where the name carries no model number (a VM's masked ``"AMD EPYC"``), the family and
    model from ``cpu_id`` are added, so that two such hosts get two names."""
    name = slug(model)
    m = re.match(r"\S+ (\d+)/(\d+)/", cpu_id or "")
    if m and not re.search(r"\d", name):
        name += f"-f{m[1]}m{m[2]}"
    return f"{name}-{cores}c"


def profile_name(fp: dict, backend_short: str, backend_version: str, threads: int, device: str = "cpu") -> str:
    """The shipped-profile folder name ``<cpu>_<backend>-<major.minor>_t<threads>``; on a GPU
    ``<gpu>_<backend>-<major.minor>_cuda`` (the host threads only launch the kernels).

    >>> profile_name({"cpu_model": "Intel(R) Xeon(R) Processor", "cores": 2}, "ort", "1.31.0", 1)
    'intel-xeon-2c_ort-1.31_t1'
    >>> profile_name({"gpu": "NVIDIA H200"}, "torch", "2.11.0+cu130", 1, "cuda")
    'nvidia-h200_torch-2.11_cuda'
    """
    version = ".".join(re.split(r"[.+]", backend_version)[:2])
    if device == "cuda":
        return f"{slug(fp.get('gpu') or 'gpu')}_{backend_short}-{version}_cuda"
    return f"{cpu_slug(fp['cpu_model'], fp['cores'], fp.get('cpu_id'))}_{backend_short}-{version}_t{threads}"
