"""Refactor guard: a seeded run of every algorithm gives bit-identical results before and after.

Runs six short seeded federations in this process (the tests' loopback grid,
``tests/loopback.py``: the real strategy and client code, no Ray, no ``flwr run``): FedAvg,
LotteryFL (always pruning), FedLTN on the BatchNorm CNN (client state on disk, so the snapshot
path runs) and FLASH in its three modes (SPDST, JMWST, hetero with two device classes). Each
run writes under a temporary output root, and its clients keep their disk state under a
temporary ``FEDTICKET_STATE_HOME``.

Every results table of a run (``*.parquet``: rounds, clients, comm, masks), wall-clock columns
(``WALL_CLOCK_COLUMNS``) dropped, gets an exact digest: sha256 over the column names, dtypes and
each cell's canonical bytes (numbers as their bit patterns, every NaN as one pattern, -0.0 kept
apart from 0.0, strings as UTF-8). So do the server's final global model
(``strategy.global_model()``, arrays by name) and its masks (``strategy.masks``, per client;
FLASH: and ``strategy.consensus``).

``--record`` writes ``identity_reference.json`` (the digests, the configs, the git commit and
the library versions) and keeps copies of the tables and arrays in ``identity_reference/``;
``--check`` (the default) reruns, prints run x table as ``same`` or ``DIFFERENT`` (for a
difference: the first differing column and row, or array and index, against those copies),
writes ``identity_check.md`` and exits 1 on any difference or failed run. Bit identity holds on
one machine and library stack: the check names any version that differs from the record.

Usage::

    python -m benchmarks.identity --record          # at the commit to compare against
    python -m benchmarks.identity                   # after the change: same as --check
    python -m benchmarks.identity --runs fedavg flash-spdst
    python -m benchmarks.identity --record --out /elsewhere/results
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from flwr.supercore.task_identity import TaskIdentity

# What the refactor may move: keep these four imports in one place.
from fedticket.config import RunConfig
from simulations.server_app import run_federation
from strategies.reporting import WALL_CLOCK_COLUMNS
from tests.loopback import LoopbackGrid

PROJECT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
REFERENCE = "identity_reference.json"
CACHE = "identity_reference"
REPORT = "identity_check.md"
MODEL, SERVER_MASKS = "global_model", "server_masks"  # digested like tables, kept as .npz

_SHARED = {
    "num-rounds": 3,
    "partitioner": "iid",
    "seed": 7,
    "client-threads": 1,  # torch's CPU kernels may sum in a thread-count-dependent order
}
_FLASH = {"algorithm": "flash", "model": "mnist-cnn", "density": 0.2, "lr": 0.05}
_FLASH |= {"init-epochs": 1, "init-fraction": 0.5}


@dataclass(frozen=True)
class Run:
    clients: int
    config: dict
    node_configs: dict[int, dict] = field(default_factory=dict)

    def run_config(self, output_root: Path) -> dict:
        quorum = {f"min-{k}-clients": self.clients for k in ("train", "evaluate", "available")}
        return _SHARED | quorum | self.config | {"output-root": str(output_root)}


RUNS: dict[str, Run] = {
    "fedavg": Run(
        3,
        {"algorithm": "fedavg", "model": "mlp", "partitioner": "dirichlet", "dirichlet-alpha": 0.5},
    ),
    "lotteryfl": Run(3, {"algorithm": "lotteryfl", "model": "mnist-cnn", "acc-threshold": -1.0}),
    "fedltn": Run(
        3,
        {
            "algorithm": "fedltn",
            "model": "mnist-cnn-bn",
            "acc-threshold": -1.0,
            "client-state": "disk",
        },
    ),
    "flash-spdst": Run(4, _FLASH | {"flash-mode": "spdst"}),
    "flash-jmwst": Run(4, _FLASH | {"flash-mode": "jmwst"}),
    "flash-hetero": Run(
        4,
        _FLASH | {"flash-mode": "hetero"},
        {pid: {"device-class": "pi4" if pid < 2 else "jetson"} for pid in range(4)},
    ),
}


# ------------------------------------------------------------------ canonical bytes
def _canonical_array(array: np.ndarray) -> np.ndarray:
    """A C-contiguous copy whose NaNs all have one bit pattern (NaN payloads and signs are
    noise: the same computation may produce either)."""
    array = np.ascontiguousarray(array)
    if array.dtype.kind in "fc" and np.isnan(array).any():
        array = array.copy()
        if array.dtype.kind == "c":
            real, imag = array.real.copy(), array.imag.copy()
            real[np.isnan(real)], imag[np.isnan(imag)] = np.nan, np.nan
            array = real + 1j * imag
        else:
            array[np.isnan(array)] = np.nan
    return array


def _length_prefixed(data: bytes) -> bytes:
    return len(data).to_bytes(8, "little") + data


def _value_bytes(value: object) -> bytes:
    """One cell of an object column, tagged by type so ``1``, ``1.0`` and ``"1"`` differ."""
    if value is None or value is pd.NA or value is pd.NaT:
        return b"N"
    if isinstance(value, (bool, np.bool_)):
        return b"B" + (b"1" if value else b"0")
    if isinstance(value, (int, np.integer)):
        return b"I" + _length_prefixed(str(int(value)).encode())
    if isinstance(value, (float, np.floating)):
        return b"F" + _canonical_array(np.array([value], dtype=np.float64)).tobytes()
    if isinstance(value, str):
        return b"S" + _length_prefixed(value.encode("utf-8"))
    if isinstance(value, bytes):
        return b"Y" + _length_prefixed(value)
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return b"L" + _length_prefixed(b"".join(_value_bytes(v) for v in value.tolist()))
        return b"A" + _array_bytes(value)
    if isinstance(value, (list, tuple)):
        return b"L" + _length_prefixed(b"".join(_value_bytes(v) for v in value))
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: str(kv[0]))
        return b"D" + _length_prefixed(
            b"".join(_value_bytes(str(k)) + _value_bytes(v) for k, v in items)
        )
    raise TypeError(f"no canonical bytes for a {type(value).__name__} cell ({value!r})")


def _array_bytes(array: np.ndarray) -> bytes:
    array = _canonical_array(array)
    header = f"{array.dtype.str}{array.shape}".encode()
    return _length_prefixed(header) + _length_prefixed(array.tobytes())


def column_cells(series: pd.Series) -> list[bytes]:
    """Each cell's canonical bytes: numeric numpy columns by their exact bit patterns, the rest
    (strings, lists, nullable extension types) cell by cell."""
    if isinstance(series.dtype, np.dtype) and series.dtype.kind in "biufcmM":
        array = _canonical_array(series.to_numpy())
        width = array.dtype.itemsize
        data = array.tobytes()
        return [data[i : i + width] for i in range(0, len(data), width)]
    return [_value_bytes(v) for v in series.to_numpy(dtype=object)]


def frame_digest(frame: pd.DataFrame) -> str:
    digest = hashlib.sha256(_length_prefixed(str(len(frame)).encode()))
    for name in frame.columns:
        digest.update(_length_prefixed(str(name).encode()))
        digest.update(_length_prefixed(str(frame[name].dtype).encode()))
        for cell in column_cells(frame[name]):
            digest.update(_length_prefixed(cell))
    return digest.hexdigest()


def arrays_digest(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(_length_prefixed(name.encode()) + _array_bytes(np.asarray(arrays[name])))
    return digest.hexdigest()


# ------------------------------------------------------------------ running
@dataclass
class Outcome:
    seconds: float = float("nan")
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    arrays: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)  # table -> the run's parquet file
    error: str = ""

    def entries(self) -> dict[str, dict]:
        entries = {
            name: {"rows": len(f), "columns": list(map(str, f.columns)), "sha256": frame_digest(f)}
            for name, f in self.tables.items()
        }
        for name, arrays in self.arrays.items():
            entries[name] = {"rows": len(arrays), "columns": sorted(arrays)}
            entries[name]["sha256"] = arrays_digest(arrays)
        return entries


def comparable(path: Path) -> pd.DataFrame:
    frame = pd.read_parquet(path)
    return frame.drop(columns=[c for c in frame.columns if c in WALL_CLOCK_COLUMNS])


def server_masks(strategy) -> dict[str, np.ndarray]:
    """``strategy.masks`` (partition id -> layer -> bool array) as ``"pid/layer"`` keys, plus
    FLASH's consensus mask (``strategy.consensus``, all SPDST has) as ``"consensus/layer"``."""
    arrays = {
        f"{pid}/{layer}": np.asarray(mask)
        for pid, masks in strategy.masks.items()
        for layer, mask in (masks or {}).items()
    }
    consensus = getattr(strategy, "consensus", None) or {}
    return arrays | {f"consensus/{layer}": np.asarray(m) for layer, m in consensus.items()}


def run_one(name: str, work: Path) -> Outcome:
    spec = RUNS[name]
    config = spec.run_config(work / name / "runs")
    os.environ["FEDTICKET_STATE_HOME"] = str(work / name / "client-state")
    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = 1  # as a ServerApp's
    started = time.perf_counter()
    try:
        grid = LoopbackGrid(spec.clients, config, node_configs=spec.node_configs)
        strategy = run_federation(grid, RunConfig.from_run_config(config))
    except Exception:
        return Outcome(time.perf_counter() - started, error=traceback.format_exc(limit=8))
    outcome = Outcome(time.perf_counter() - started)
    for path in sorted(Path(strategy.run_dir.path).glob("*.parquet")):
        outcome.files[path.stem] = path
        outcome.tables[path.stem] = comparable(path)
    model = strategy.global_model() or {}
    outcome.arrays[MODEL] = {k: np.asarray(v) for k, v in model.items()}
    outcome.arrays[SERVER_MASKS] = server_masks(strategy)
    return outcome


def run_all(names: Iterable[str], work: Path) -> dict[str, Outcome]:
    outcomes = {}
    saved = os.environ.get("FEDTICKET_STATE_HOME")
    try:
        for name in names:
            outcomes[name] = outcome = run_one(name, work)
            status = "FAILED" if outcome.error else "ok"
            print(f"{name:13s} {outcome.seconds:6.1f} s  {status}", flush=True)
    finally:
        if saved is None:
            os.environ.pop("FEDTICKET_STATE_HOME", None)
        else:
            os.environ["FEDTICKET_STATE_HOME"] = saved
    return outcomes


# ------------------------------------------------------------------ reference
def git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(PROJECT), *args], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def code_root() -> Path:
    """Where the code under test was imported from (a worktree's, not an installed copy)."""
    return Path(sys.modules[run_federation.__module__].__file__).resolve().parents[1]


def environment() -> dict:
    import flwr
    import pyarrow

    changed = [
        line[3:]
        for line in git("status", "--porcelain").splitlines()
        if line[3:] not in ("benchmarks/identity.py", "benchmarks/results/")
        and not line[3:].startswith("benchmarks/results/identity")
    ]
    return {
        "commit": git("rev-parse", "HEAD"),
        "code": str(code_root()),
        "uncommitted_changes": changed,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "pyarrow": pyarrow.__version__,
        "flwr": flwr.__version__,
    }


def record(outcomes: dict[str, Outcome], out: Path) -> None:
    failed = [name for name, o in outcomes.items() if o.error]
    if failed:
        for name in failed:
            print(f"--- {name} failed:\n{outcomes[name].error}", file=sys.stderr)
        raise SystemExit(f"not recorded: {', '.join(failed)} failed")
    cache = out / CACHE
    shutil.rmtree(cache, ignore_errors=True)
    for name, outcome in outcomes.items():
        (cache / name).mkdir(parents=True)
        for table, path in outcome.files.items():
            shutil.copyfile(path, cache / name / f"{table}.parquet")
        for kind, arrays in outcome.arrays.items():
            np.savez(cache / name / f"{kind}.npz", **arrays)
    reference = {
        "recorded": environment(),
        "configs": {name: RUNS[name].run_config(Path("<tmp>")) for name in outcomes},
        "node_configs": {name: RUNS[name].node_configs for name in outcomes},
        "seconds": {name: round(o.seconds, 1) for name, o in outcomes.items()},
        "runs": {name: o.entries() for name, o in outcomes.items()},
    }
    (out / REFERENCE).write_text(json.dumps(reference, indent=1) + "\n")
    print(f"recorded {len(outcomes)} runs at {reference['recorded']['commit'][:12]} -> {out}")


# ------------------------------------------------------------------ check
def first_difference_in_frames(ref: pd.DataFrame, now: pd.DataFrame) -> str:
    if list(ref.columns) != list(now.columns):
        gone = [c for c in ref.columns if c not in now.columns]
        new = [c for c in now.columns if c not in ref.columns]
        if gone or new:
            return f"columns only in reference {gone}, only now {new}"
        return f"column order: reference {list(ref.columns)}, now {list(now.columns)}"
    if len(ref) != len(now):
        return f"rows: reference {len(ref)}, now {len(now)}"
    for name in ref.columns:
        if str(ref[name].dtype) != str(now[name].dtype):
            return f"column {name!r}: dtype {ref[name].dtype} -> {now[name].dtype}"
        cells = zip(column_cells(ref[name]), column_cells(now[name]), strict=True)
        row = next((i for i, (a, b) in enumerate(cells) if a != b), None)
        if row is not None:
            was, is_ = ref[name].iloc[row], now[name].iloc[row]
            return f"column {name!r}, row {row}: {_show(was)} -> {_show(is_)}"
    return "digest differs but no cell does (canonicalisation changed?)"


def _element_bits(array: np.ndarray) -> np.ndarray:
    """One row of raw bytes per element (C order)."""
    flat = _canonical_array(array).reshape(-1)
    return flat.view(np.uint8).reshape(flat.size, flat.dtype.itemsize)


def first_difference_in_arrays(ref: dict[str, np.ndarray], now: dict[str, np.ndarray]) -> str:
    if sorted(ref) != sorted(now):
        gone, new = sorted(set(ref) - set(now)), sorted(set(now) - set(ref))
        return f"arrays only in reference {gone}, only now {new}"
    for name in sorted(ref):
        a, b = np.asarray(ref[name]), np.asarray(now[name])
        if a.dtype != b.dtype or a.shape != b.shape:
            return f"{name}: {a.dtype}{a.shape} -> {b.dtype}{b.shape}"
        differ = np.flatnonzero((_element_bits(a) != _element_bits(b)).any(axis=1))
        if len(differ):
            index = np.unravel_index(differ[0], a.shape)
            where = ", ".join(map(str, index))
            change = f"{_show(a[index])} -> {_show(b[index])}"
            return f"{name}[{where}]: {change} ({len(differ)} of {a.size} differ)"
    return "digest differs but no element does (canonicalisation changed?)"


def locate(out: Path, run: str, table: str, outcome: Outcome) -> str:
    """The first difference against the copy kept when the reference was recorded."""
    suffix = ".npz" if table in outcome.arrays else ".parquet"
    cached = out / CACHE / run / f"{table}{suffix}"
    if table not in outcome.arrays and table not in outcome.tables:
        return "table missing now"
    if not cached.exists():
        return f"not localised: no cached copy {cached}"
    if table in outcome.arrays:
        with np.load(cached) as ref:
            return first_difference_in_arrays(dict(ref), outcome.arrays[table])
    return first_difference_in_frames(comparable(cached), outcome.tables[table])


def _show(value: object) -> str:
    return repr(value.item() if isinstance(value, np.generic) else value)


def check(outcomes: dict[str, Outcome], out: Path) -> bool:
    path = out / REFERENCE
    if not path.exists():
        raise SystemExit(f"no reference at {path}: record one first (--record, at the old commit)")
    reference = json.loads(path.read_text())
    rows, details = [], []
    for run, outcome in outcomes.items():
        expected = reference["runs"].get(run)
        if expected is None:
            rows.append({"run": run, "status": "not in reference"})
            continue
        if outcome.error:
            rows.append({"run": run, "status": "FAILED"})
            details.append(f"{run} failed:\n```\n{outcome.error}```")
            continue
        got = outcome.entries()
        row = {"run": run, "seconds": f"{outcome.seconds:.1f}"}
        for table in sorted(set(expected) | set(got), key=_table_order):
            if table not in got:
                row[table] = "DIFFERENT"
                details.append(f"{run} / {table}: missing now")
            elif table not in expected:
                row[table] = "DIFFERENT"
                details.append(f"{run} / {table}: new table (not in the reference)")
            elif got[table]["sha256"] == expected[table]["sha256"]:
                row[table] = "same"
            else:
                row[table] = "DIFFERENT"
                details.append(f"{run} / {table}: {locate(out, run, table, outcome)}")
        rows.append(row)
    table = pd.DataFrame(rows)
    tables = sorted(set(table.columns) - {"run", "seconds", "status"}, key=_table_order)
    extra = [c for c in ("seconds", "status") if c in table.columns]
    table = table[["run", *extra, *tables]].fillna("-")  # "-": no such table in the run
    ok = not details and all(r.get("status", "") == "" for r in rows)
    now = environment()
    versions = [
        f"{key}: recorded {reference['recorded'].get(key)}, now {now[key]}"
        for key in ("python", "torch", "numpy", "pandas", "pyarrow", "flwr", "machine")
        if reference["recorded"].get(key) != now[key]
    ]
    lines = [
        "# Refactor identity check\n",
        f"Reference: commit `{reference['recorded']['commit']}`; now: commit `{now['commit']}`"
        + (
            f" with uncommitted changes in {len(now['uncommitted_changes'])} files"
            if now["uncommitted_changes"]
            else ""
        )
        + ".\n",
        f"Result: **{'all same' if ok else 'DIFFERENT'}** (wall-clock columns aside).\n",
        _markdown(table),
    ]
    if versions:
        lines.append("Library or machine differs from the record (bit identity may not hold):\n")
        lines += [f"- {v}" for v in versions] + [""]
    if details:
        lines.append("## Differences\n")
        lines += [f"- {d}" for d in details] + [""]
    (out / REPORT).write_text("\n".join(lines))
    print(table.to_string(index=False))
    for line in versions + details:
        print(line)
    print("all same" if ok else "DIFFERENT", f"(report: {out / REPORT})")
    return ok


def _table_order(name: str) -> tuple[int, str]:
    order = ["rounds", "clients", "comm", "masks", MODEL, SERVER_MASKS]
    return (order.index(name) if name in order else len(order), name)


def _markdown(frame: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--record", action="store_true", help="write the reference")
    mode.add_argument("--check", action="store_true", help="compare with it (the default)")
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the reference")
    args = parser.parse_args(argv)
    if args.record and args.runs != list(RUNS):
        parser.error("--record records every run (a partial reference would not check the rest)")
    torch.set_num_threads(1)  # the server's global evaluation runs in this process too
    print(f"code under test: {code_root()}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fedticket-identity-") as work:
        outcomes = run_all(args.runs, Path(work))
        if args.record:
            record(outcomes, args.out)
            return 0
        return 0 if check(outcomes, args.out) else 1


if __name__ == "__main__":
    sys.exit(main())
