"""Server side: one module per algorithm on ``SparseStrategy``, registered by name."""

# `import strategies` works only from the source tree and would load a second copy of the app
if __name__ != "fedticket.strategies":
    raise ImportError(f"import fedticket.strategies, not {__name__}: one installed namespace")

from fedticket.strategies import cell, fedavg, fedltn, fedltp, flash, itahara, lotteryfl  # noqa: F401  (registers the algorithms)
from fedticket.strategies.base import STRATEGIES, SparseStrategy, register_strategy

__all__ = ["STRATEGIES", "SparseStrategy", "register_strategy"]
