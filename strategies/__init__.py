"""Server side: one module per algorithm on ``SparseStrategy``, registered by name."""

from fedticket.strategies import cell, fedavg, fedltn, fedltp, flash, itahara, lotteryfl  # noqa: F401  (registers the algorithms)
from fedticket.strategies.base import STRATEGIES, SparseStrategy, register_strategy

__all__ = ["STRATEGIES", "SparseStrategy", "register_strategy"]
