"""The allocator the protocol measures under (latency.allocator): set per mode, recorded, refused when unknown."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from latency.allocator import ALLOCATORS, _glibc, allocator_note, apply_allocator
from latency.stats import Protocol
from nas.errors import HwnasError

# allocate, touch and free a 64 MB block (above glibc's largest mmap threshold) 20 times; the faults of each round
PROBE = """
import json, resource, sys
import torch
from latency.allocator import apply_allocator
applied = apply_allocator(sys.argv[1])
faults = []
for _ in range(20):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.empty(16 * 1024 * 1024, dtype=torch.float32)
    t.fill_(1.0)
    del t
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults": faults}))
"""


def probe(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_protocol_default_and_legacy():
    assert Protocol().allocator == "no_mmap"
    assert Protocol.from_dict({"visits": 3}).allocator == "default"  # a profile from before the field
    assert Protocol.from_dict(Protocol().to_dict()).allocator == "no_mmap"
    assert set(ALLOCATORS) == {"no_mmap", "default"}


def test_unknown_mode_is_one_clear_error():
    with pytest.raises(HwnasError, match="unknown allocator mode 'jemalloc'.*no_mmap"):
        apply_allocator("jemalloc")


def test_note_names_the_deployment_setting():
    assert "GLIBC_TUNABLES=glibc.malloc.mmap_max=0" in allocator_note("no_mmap")
    assert allocator_note(None) == ""
    assert allocator_note("default") == ", allocator: default"


@pytest.mark.skipif(_glibc() is None, reason="mallopt is glibc's")
def test_no_mmap_stops_the_faults_of_a_large_block():
    # separate processes: the allocator's state is process-wide and glibc cannot return to its growing threshold
    default, kept = probe("default"), probe("no_mmap")
    assert (default["applied"], kept["applied"]) == ("default", "no_mmap")
    assert min(default["faults"][1:]) >= 16  # 64 MB of fresh pages every round (2 MB pages at the fewest)
    # the heap grows for the first rounds (posix_memalign cannot reuse a freed block while small objects sit between
    # it and the top: 8 rounds, 512 MB, on glibc 2.36), then is reused: no fresh pages
    assert max(kept["faults"][-5:]) <= 2


def test_measure_sets_the_allocator_before_it_builds_the_model(monkeypatch):
    """A process that trained first (a search run) has grown glibc's heap under its own settings; the protocol's
    allocator must hold before the model to measure is built, as in a profile's session (a run's in-process
    measurement of a NAS-BERT model read 17 % slow, 0.5 page faults per run, with the allocator set only after)."""
    import latency.measure as measure
    from latency.backends.base import get_backend
    from nas.spaces import Context, get_space

    events: list[str] = []
    monkeypatch.setattr(measure, "apply_allocator", lambda mode: events.append(f"allocator {mode}") or mode)
    be = get_backend("torch", threads=1)
    real = be.prepare_arch
    monkeypatch.setattr(be, "prepare_arch", lambda *a, **k: events.append("build") or real(*a, **k))
    arch = get_space("nasbert", "tiny").sample(0)
    measure.measure_arch(arch, Context(1, 16), backend=be, protocol=Protocol(min_runs=3, time_cap_s=0.02, visits=1,
                                                                             e2e_visits=1))
    assert events[:2] == ["allocator no_mmap", "build"]
