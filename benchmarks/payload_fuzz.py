"""Payload fuzz: valid codec buffers and payloads, mutated, then decoded.

Every decode must give back exactly what the unmutated input decodes to, or raise
``PayloadError``; where a mutation can turn a valid input into another valid one (bytes changed
and the buffer's checksum recomputed, two tensors of one shape swapped), it may instead return
a valid decode of the changed input (``ok-altered``: the shapes, dtypes and counts its header
says, zeros outside the mask, a payload's masks and digest unchanged). Anything else fails: an
exception other than ``PayloadError``, a decode over 1 s or over 256 MB (tracemalloc peak; numpy
reports its buffers to it), a result that is not a valid decode of its input (silently wrong),
or a valid input rejected.

Mutated buffers get their crc32 recomputed (``reseal``), except in the ``flip-raw`` kind, so
that the mutations reach the decoder's logic and not only its checksum. The tests
(``tests/test_codec_fuzz*.py``) draw their cases from these modules too.

The parts: ``payload_fuzz_inputs`` (valid masks, tensors, models), ``payload_fuzz_mutations``
(one buffer mutated), ``payload_fuzz_cases`` (mask and tensor cases), ``payload_fuzz_payloads``
(payload cases), ``payload_fuzz_run`` (decoding a case under the limits); this module reports.

Usage::

    python -m benchmarks.payload_fuzz                 # 20,000 cases, seed 0
    python -m benchmarks.payload_fuzz --cases 2000 --seed 7

Writes ``results/payload_fuzz.csv`` (a row per target and mutation kind) and ``.md``, and exits
with status 1 if any case failed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from benchmarks.payload_fuzz_mutations import BUFFER_KIND_NOTES
from benchmarks.payload_fuzz_payloads import PAYLOAD_KIND_NOTES
from benchmarks.payload_fuzz_run import (
    MEMORY_LIMIT_BYTES,
    TARGETS,
    TIME_LIMIT_S,
    failed,
    kinds_for,
    run_cases,
)
from fedticket.store.results import markdown_table

RESULTS = Path(__file__).resolve().parent / "results"
KIND_NOTES = BUFFER_KIND_NOTES | PAYLOAD_KIND_NOTES


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Per target and mutation kind (and all together): cases, outcomes, the slowest decode
    and the largest peak."""

    def row(group: pd.DataFrame) -> dict:
        outcome = group["outcome"]
        return {
            "cases": len(group),
            "errors": int((outcome == "PayloadError").sum()),
            "ok": int((outcome == "ok-identical").sum()),
            "altered": int((outcome == "ok-altered").sum()),
            "max_seconds": float(group["seconds"].max()),
            "max_MB": float(group["peak_bytes"].max() / 2**20),
            "other_exceptions": int((outcome == "other-exception").sum()),
            "silently_wrong": int((outcome == "wrong-result").sum()),
            "valid_rejected": int((outcome == "valid-rejected").sum()),
            "warnings": int(group["warnings"].sum()),
        }

    rows = [
        {"target": target, "kind": kind, **row(group)}
        for (target, kind), group in runs.groupby(["target", "kind"], sort=False)
    ]
    rows.sort(key=lambda r: (TARGETS.index(r["target"]), kinds_for("payload").index(r["kind"])))
    rows.append({"target": "all", "kind": "all", **row(runs)})
    return pd.DataFrame(rows)


def write_results(runs: pd.DataFrame, out: Path, seed: int) -> pd.DataFrame:
    table = summarise(runs)
    schemes = runs.groupby(["target", "scheme"]).size().rename("cases").reset_index()
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "payload_fuzz.csv", index=False)
    bad = runs[runs.apply(failed, axis=1)]
    text = [
        "# Payload fuzz\n",
        f"`python -m benchmarks.payload_fuzz --cases {len(runs)} --seed {seed}`: valid buffers "
        "and payloads, one mutation each, decoded (see the module docstring). errors: "
        "PayloadError; ok: the original back; altered: a valid decode of a mutated valid input; "
        f"limits {TIME_LIMIT_S:g} s and {MEMORY_LIMIT_BYTES // 2**20} MB (tracemalloc peak) a "
        f"decode. Failed cases: {len(bad)}.\n",
        markdown_table(table),
        "MB: 2^20 bytes. warnings: Python warnings raised while decoding (counted, not failures).",
        "\nMutation kinds:\n",
        *(f"- `{kind}`: {note}" for kind, note in KIND_NOTES.items()),
        "\nBuffers by position scheme before the mutation:\n",
        markdown_table(schemes),
    ]
    (out / "payload_fuzz.md").write_text("\n".join(text))
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    runs = run_cases(args.cases, args.seed, progress=True)
    table = write_results(runs, args.out, args.seed)
    pd.set_option("display.width", 200)
    print(table.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    bad = runs[runs.apply(failed, axis=1)]
    for _, row in bad.head(20).iterrows():
        print(
            f"FAILED case {row['case']}: {row['target']} {row['kind']} {row['outcome']} "
            f"{row['seconds']:.3f} s {row['peak_bytes'] / 2**20:.1f} MB {row['detail']}"
        )
    print(f"{len(bad)} of {len(runs)} cases failed; tables in {args.out}")
    return 1 if len(bad) else 0


if __name__ == "__main__":
    sys.exit(main())
