"""fedticket: lottery tickets in federated learning, on Flower.

The core package: pure torch/numpy; Flower records are built only in ``wire.records`` (payloads)
and ``snapshots``.

The Flower app's packages are ``fedticket.strategies``, ``fedticket.clients`` and
``fedticket.simulations``: one distribution namespace, so nothing named ``clients`` or
``strategies`` lands in site-packages beside a user's own modules. In the source tree (a clone,
an editable install, and the app bundle ``flwr run`` ships to the SuperLink and its Ray workers)
their folders sit beside this one; an installed wheel has them inside it. ``__path__`` takes the
source tree's root so the three resolve from the same tree as this package, whichever it is.
"""

from pathlib import Path

__version__ = "0.1.0"

_APP_PACKAGES = ("strategies", "clients", "simulations")
_here = Path(__file__).resolve().parent
if not (_here / "strategies").is_dir() and all(
    (_here.parent / name / "__init__.py").is_file() for name in _APP_PACKAGES
):
    __path__.append(str(_here.parent))
