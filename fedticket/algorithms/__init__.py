"""What each algorithm's server and client halves share: its run-config section (the
hyper-parameters, ``fedticket.config.sections``) and maths used on both sides.

One module per algorithm. Importing this package imports every module in it, which registers
each section (``fedticket.registry.SECTIONS`` names this package as its provider): a new
algorithm adds a file here and edits nothing shared.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
