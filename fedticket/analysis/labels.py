"""Readable names for runs and the setup line under every figure (issue #25).

A run directory is named by its config hash, which says nothing to a reader. ``run_labels``
names each run by its algorithm and the settings in which it differs from the other runs
shown with it (``fedavg seed=2``, ``lotteryfl prune-rate=0.3``); ``setup_caption`` states what
they share: data, partition, clients, rounds, local epochs, and what differs between them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: keys that name where or how a run was kept, not what it computed
_NOT_SETUP = {"output-root", "resume", "checkpoint-every", "tracking", "client-state"}
#: at most this many differing settings in a label (the rest are in config.json)
MAX_LABEL_KEYS = 3


def _differing(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    keys = sorted({k for c in configs for k in c} - _NOT_SETUP - {"algorithm"})
    return [k for k in keys if len({repr(c.get(k)) for c in configs}) > 1]


def run_labels(runs: Sequence[Mapping[str, Any]], names: Sequence[str] = ()) -> list[str]:
    """One label per run (``load_run`` dicts): its algorithm, then the settings that differ
    among runs of that algorithm; ``names`` (e.g. the directory names) tell apart runs whose
    configs are the same."""
    configs = [run.get("config", {}) for run in runs]
    labels = []
    for config in configs:
        algorithm = str(config.get("algorithm", "run"))
        peers = [c for c in configs if c.get("algorithm") == config.get("algorithm")]
        shown = _differing(peers)[:MAX_LABEL_KEYS]
        labels.append(" ".join([algorithm, *(f"{k}={config.get(k)}" for k in shown)]))
    repeated = {label for label in labels if labels.count(label) > 1}
    return [
        f"{label} ({names[i]})" if label in repeated and i < len(names) else label
        for i, label in enumerate(labels)
    ]


def _clients(run: Mapping[str, Any]) -> int | None:
    clients = run.get("clients")
    if clients is not None and "partition_id" in clients and len(clients):
        return int(clients["partition_id"].nunique())
    return None


def _rounds(run: Mapping[str, Any]) -> int | None:
    rounds = run.get("rounds")
    if rounds is not None and "round" in rounds and len(rounds):
        return int(rounds["round"].max())
    return None


def _partition(config: Mapping[str, Any]) -> str | None:
    name = config.get("partitioner")
    if name == "dirichlet":
        return f"dirichlet alpha {config.get('dirichlet-alpha')}"
    if name == "shards":
        return f"shards of {config.get('shard-size')}, {config.get('shards-per-client')} each"
    return str(name) if name else None


def setup_caption(runs: Mapping[str, Mapping[str, Any]]) -> str:
    """One line: the setup the runs share, then what differs ("rounds 2 / 3")."""
    values = {
        "data": [run.get("config", {}).get("dataset") for run in runs.values()],
        "partition": [_partition(run.get("config", {})) for run in runs.values()],
        "clients": [_clients(run) for run in runs.values()],
        "rounds": [_rounds(run) for run in runs.values()],
        "local epochs": [run.get("config", {}).get("local-epochs") for run in runs.values()],
    }
    parts = []
    for name, seen in values.items():
        known = list(dict.fromkeys(v for v in seen if v is not None))
        if not known:
            continue
        if len(known) == 1:
            parts.append(f"{name} {known[0]}")
        else:
            parts.append(f"{name} {' / '.join(str(v) for v in known)} (differ)")
    runs_part = f"{len(runs)} run" + ("s" if len(runs) != 1 else "")
    return " | ".join([runs_part, *parts])
