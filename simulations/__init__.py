"""The Flower app (ServerApp, ClientApp), presets, notebooks and edge scripts."""
