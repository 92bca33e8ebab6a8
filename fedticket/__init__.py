"""fedticket: lottery tickets in federated learning, on Flower.

The core package: pure torch/numpy (no Flower import outside ``flower_io``).
"""

__version__ = "0.1.0"
