"""The Flower app (ServerApp, ClientApp), presets, notebooks and edge scripts."""

# `import simulations` works only from the source tree and would load a second copy of the app
if __name__ != "fedticket.simulations":
    raise ImportError(f"import fedticket.simulations, not {__name__}: one installed namespace")
