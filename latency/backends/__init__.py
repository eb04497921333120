"""Ways of running and timing a graph, one module each, registered by name (``hwnas profile --backend``)."""
from latency.backends import onnxruntime, torch  # noqa: F401  (registration)
from latency.backends.base import (
    BACKEND_REGISTRY,
    Backend,
    BackendError,
    Runnable,
    get_backend,
    register_backend,
)

__all__ = ["BACKEND_REGISTRY", "Backend", "BackendError", "Runnable", "get_backend", "register_backend"]
