"""The identity check's reference: ``identity_reference.json`` (the digests, the configs, the git
commit and the library versions) and copies of the tables and arrays in ``identity_reference/``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks.identity_runs import RUNS, Outcome, code_root

PROJECT = Path(__file__).resolve().parents[1]
REFERENCE = "identity_reference.json"
CACHE = "identity_reference"


def git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(PROJECT), *args], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _is_the_check(path: str) -> bool:
    """The check's own modules and results, which are not code under test."""
    return path == "benchmarks/results/" or path.startswith(
        ("benchmarks/identity", "benchmarks/results/identity")
    )


def environment() -> dict:
    import flwr
    import pyarrow

    changed = [
        line[3:]
        for line in git("status", "--porcelain").splitlines()
        if not _is_the_check(line[3:])
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
