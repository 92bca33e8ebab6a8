"""Deployment on real SuperNodes: a loopback federation (SuperLink + SuperNodes on this
machine, TLS and SuperNode authentication by default), its certificates and keys, and a byte
relay that measures what crosses the link. The guide for Raspberry Pi and Jetson is README.md."""
