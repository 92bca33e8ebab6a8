"""Payload fuzz: drawing a case, decoding it under the time and memory limits, naming the
outcome (PayloadError, the original back, a valid decode of a changed input, or a failure)."""

from __future__ import annotations

import contextlib
import time
import tracemalloc
import warnings
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from benchmarks.payload_fuzz_cases import Case, mask_case, same_result, tensor_case
from benchmarks.payload_fuzz_mutations import BUFFER_KINDS
from benchmarks.payload_fuzz_payloads import PAYLOAD_KINDS, payload_case
from fedticket.wire.codec import PayloadError

TIME_LIMIT_S = 1.0
MEMORY_LIMIT_BYTES = 256 * 2**20

TARGETS = ("mask", "tensor", "payload")
# kinds that can make another valid input; the others must decode to the original or fail
CAN_ALTER = frozenset(BUFFER_KINDS) - {"none", "flip-raw"} | {"hdr-tensors", "buffer-swap"}
FAILURES = ("other-exception", "wrong-result", "valid-rejected")


MAKERS: dict[str, Callable[[np.random.Generator, str], Case]] = {
    "mask": mask_case,
    "tensor": tensor_case,
    "payload": payload_case,
}


def kinds_for(target: str) -> tuple[str, ...]:
    return BUFFER_KINDS + PAYLOAD_KINDS if target == "payload" else BUFFER_KINDS


def make_case(rng: np.random.Generator, target: str | None = None, kind: str | None = None) -> Case:
    """A random case (a random target and a kind that applies to it, unless given)."""
    target = target or str(rng.choice(TARGETS))
    kind = kind or str(rng.choice(kinds_for(target)))
    return MAKERS[target](rng, kind)


def run_case(case: Case) -> dict:
    """Decode once timed (counting the warnings raised), once under tracemalloc for the peak,
    and name the outcome."""
    detail = ""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        try:
            result, outcome = case.decode(), None
        except PayloadError as exc:
            result, outcome, detail = None, "PayloadError", str(exc)
        except Exception as exc:
            result, outcome, detail = None, "other-exception", f"{type(exc).__name__}: {exc}"
        seconds = time.perf_counter() - start
    tracemalloc.start()
    with contextlib.suppress(Exception):
        case.decode()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    if outcome is None:
        if not case.truth_ok:
            outcome, detail = "wrong-result", "the unmutated input did not decode to its values"
        elif same_result(result, case.reference):
            outcome = "ok-identical"
        elif case.kind in CAN_ALTER and case.valid(result):
            outcome = "ok-altered"
        else:
            outcome, detail = "wrong-result", "decoded to something else than its input says"
    elif outcome == "PayloadError" and case.kind == "none":
        outcome = "valid-rejected"
    return {
        "target": case.target,
        "kind": case.kind,
        "scheme": case.scheme,
        "outcome": outcome,
        "seconds": seconds,
        "peak_bytes": peak,
        "warnings": len(caught),
        "detail": detail[:200],
    }


def failed(row: Mapping) -> bool:
    return (
        row["outcome"] in FAILURES
        or row["seconds"] > TIME_LIMIT_S
        or row["peak_bytes"] > MEMORY_LIMIT_BYTES
    )


def run_cases(cases: int, seed: int = 0, progress: bool = False) -> pd.DataFrame:
    """``cases`` random cases, case i drawn from the generator seeded with (seed, i)."""
    rows = []
    for i in range(cases):
        row = run_case(make_case(np.random.default_rng([seed, i])))
        rows.append({"case": i, **row})
        if progress and (i + 1) % 2000 == 0:
            print(f"{i + 1} cases", flush=True)
    return pd.DataFrame(rows)
