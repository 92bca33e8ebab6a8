"""Shared by the codec fuzz tests: hand-written buffers with a correct checksum, and the peak
memory and time of one decode."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable

from benchmarks.payload_fuzz_mutations import reseal
from fedticket.wire.buffer import pack_header
from fedticket.wire.codec import Scheme

POSITION_SCHEMES = [Scheme.BITMAP, Scheme.GOLOMB, Scheme.ENUM, Scheme.ENUM_ROWS]


def traced_call(fn: Callable[[], object]) -> tuple[int, float, BaseException | None]:
    """(tracemalloc peak bytes, seconds, the exception raised) of one call."""
    tracemalloc.start()
    start = time.perf_counter()
    error = None
    try:
        fn()
    except Exception as exc:
        error = exc
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak, seconds, error


def sealed(scheme: Scheme, value_code: int, shape, count: int, body: bytes, param=0) -> bytes:
    """A buffer with a hand-written header and a correct checksum."""
    header = pack_header(scheme, value_code, tuple(shape), count, 0, param)
    return reseal(header + bytes(4) + body)


def sealed_positions(scheme: Scheme, shape, count: int, positions: bytes, param=0) -> bytes:
    header = pack_header(scheme, 0, tuple(shape), count, len(positions), param)
    return reseal(header + bytes(4) + positions)
