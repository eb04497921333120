"""Search spaces and the op vocabulary. Importing this package registers the built-in spaces."""
from nas.spaces import adabert, nasbert  # noqa: F401  (registration)
from nas.spaces.base import SPACE_REGISTRY, CostFactor, Decision, SearchSpace, SpaceError, get_space
from nas.spaces.ops import OP_REGISTRY, Context, OpError, OpSpec

__all__ = [
    "SPACE_REGISTRY", "OP_REGISTRY", "CostFactor", "Decision", "SearchSpace", "SpaceError", "get_space",
    "Context", "OpError", "OpSpec",
]
