"""fedticket: lottery tickets in federated learning, on Flower.

The core package: pure torch/numpy; Flower records are built only in ``wire.records`` (payloads)
and ``snapshots``.
"""

__version__ = "0.1.0"
