"""Differential-privacy accounting: what a run spends, per round and in total.

``accounting`` composes the mechanisms with a maintained library (Google's ``dp-accounting``
RDP accountant, the one Flower's own ``flwr.serverapp.RdpAccountant`` wraps); ``zcdp`` holds the
closed forms (Bun and Steinke 2016) the tests and the papers' analyses use.
"""
