"""Round summaries, progress lines and the results tables a strategy writes every round."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fedticket.store.results import RunDirectory, masks_frame
from fedticket.wire.ledger import CommLedger

log = logging.getLogger("flwr")  # Flower's handlers print it in `flwr run --stream`

#: what an evaluate reply reports per client (fedticket.learn.eval_protocols; metric keys use
#: dashes)
CLIENT_PROTOCOL_COLUMNS = (
    "served_loss",
    "served_accuracy",
    "local_loss",
    "local_accuracy",
    "local_age",
    "reference_accuracy",
)
#: what a client row measures, when it has it (a failure row has none of them)
CLIENT_MEASURES = (
    "num_examples",
    "train_loss",
    "train_seconds",
    "client_seconds",
    *CLIENT_PROTOCOL_COLUMNS,
    "density",
)
CLIENT_COLUMNS = [
    "round",
    "phase",
    "node_id",
    "partition_id",
    "device_class",
    "density_level",
    "status",
    "reason",
    *CLIENT_MEASURES,
    "message_bytes_down",
    "message_bytes_up",
    "transfer_seconds",
]


@dataclass(frozen=True)
class ClientRow:
    """One row of ``clients.parquet`` before the ledger's traffic columns are joined on:
    who (round, phase, node, partition, device), how it went (status ``ok``, ``error``,
    ``timeout``, ``malformed`` or ``invalid``, and why), and what it measured."""

    round: int
    phase: str
    node_id: int
    partition_id: int
    device_class: str
    density_level: float
    status: str = "ok"
    reason: str = ""
    measures: Mapping[str, float | None] = field(default_factory=dict)

    def as_dict(self) -> dict:
        unknown = set(self.measures) - set(CLIENT_MEASURES)
        if unknown:
            raise ValueError(f"client rows have no columns {sorted(unknown)}")
        head = {name: getattr(self, name) for name in CLIENT_COLUMNS[:8]}
        return head | dict(self.measures)


#: protocols scored on the clients, each summarised over clients in the rounds table
CLIENT_PROTOCOLS = ("served", "local", "reference")
_TEXT = {"phase", "device_class", "status", "reason"}
#: columns that measure time, so differ between two otherwise identical runs
WALL_CLOCK_COLUMNS = frozenset(
    {
        "seconds",
        "seconds_clients",
        "seconds_global",
        "finished_s",
        "train_seconds",
        "client_seconds",
    }
)
_INTS = {"round": "int64", "node_id": "uint64", "partition_id": "int64"}


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def round_summary(
    server_round: int, client_rows: list[dict], ledger: CommLedger, seconds: float
) -> dict:
    """One ``rounds.parquet`` row from this round's client rows and ledger rows.

    Each client-side protocol (``CLIENT_PROTOCOLS``) gets its mean over clients (the papers'
    convention), std and min over clients; ``served_accuracy_pooled`` weights every local test
    example equally. The ``global`` protocol is the server's and is added by the strategy."""
    rows = [r for r in client_rows if r["round"] == server_round]
    train = [r for r in rows if r["phase"] == "train"]
    ok_train = [r for r in train if r["status"] == "ok"]
    evals = [r for r in rows if r["phase"] == "evaluate"]
    evaluated = [r for r in evals if r["status"] == "ok" and r["num_examples"] > 0]

    def over_clients(key: str) -> np.ndarray:
        values = np.array([_number(r.get(key)) for r in evaluated], dtype=float)
        return values[~np.isnan(values)]

    def stat(fn, key: str) -> float:
        values = over_clients(key)
        return float(fn(values)) if len(values) else math.nan

    protocols = {}
    for protocol in CLIENT_PROTOCOLS:
        key = f"{protocol}_accuracy"
        protocols |= {
            key: stat(np.mean, key),
            f"{key}_std": stat(np.std, key),
            f"{key}_min": stat(np.min, key),
        }
    protocols |= {
        "served_loss": stat(np.mean, "served_loss"),
        "local_loss": stat(np.mean, "local_loss"),
        "local_age": stat(np.mean, "local_age"),
        "local_clients": len(over_clients("local_accuracy")),
    }
    n_eval = np.array([r["num_examples"] for r in evaluated], dtype=float)
    served = [_number(r.get("served_accuracy")) for r in evaluated]
    protocols["served_accuracy_pooled"] = (
        float(np.average(served, weights=n_eval)) if evaluated else math.nan
    )

    weights = [r["num_examples"] for r in ok_train]
    train_loss = (
        float(np.average([r["train_loss"] for r in ok_train], weights=weights))
        if sum(weights)
        else math.nan
    )
    down = ledger.totals(round=server_round, direction="down")
    up = ledger.totals(round=server_round, direction="up")
    return {
        "round": server_round,
        "train_clients": len(ok_train),
        "train_failures": len(train) - len(ok_train),
        "eval_clients": sum(1 for r in evals if r["status"] == "ok"),
        "eval_failures": sum(1 for r in evals if r["status"] != "ok"),
        "malformed_replies": sum(1 for r in rows if r["status"] == "malformed"),
        "invalid_replies": sum(1 for r in rows if r["status"] == "invalid"),
        "train_loss": train_loss,
        **protocols,
        "mean_density": float(np.mean([r["density"] for r in ok_train])) if ok_train else math.nan,
        "message_bytes_down": down["message_bytes"],
        "message_bytes_up": up["message_bytes"],
        "payload_bytes_down": down["payload_bytes"],
        "payload_bytes_up": up["payload_bytes"],
        "position_bytes_down": down["position_bytes"],
        "position_bytes_up": up["position_bytes"],
        "dense_bytes_down": down["dense_bytes"],
        "dense_bytes_up": up["dense_bytes"],
        "seconds": seconds,
    }


def _number(value: object) -> float:
    return math.nan if value is None else float(value)


def log_progress(summary: dict, num_rounds: int) -> None:
    """One line per round: the protocols side by side (NaN: not evaluated this round)."""
    log.info(
        "round %d/%d  served %.4f | local %.4f | global %.4f | reference %.4f | "
        "density %.3f | down %s up %s | %.1f s",
        summary["round"],
        num_rounds,
        summary["served_accuracy"],
        summary["local_accuracy"],
        summary["global_accuracy"],
        summary["reference_accuracy"],
        summary["mean_density"],
        human_bytes(summary["message_bytes_down"]),
        human_bytes(summary["message_bytes_up"]),
        summary["seconds"],
    )


def write_tables(
    run_dir: RunDirectory,
    round_rows: list[dict],
    client_rows: list[dict],
    ledger: CommLedger,
    masks: Mapping[int, Mapping[str, np.ndarray]] | None = None,
) -> None:
    """Rewrite every table atomically (a killed run keeps each finished round)."""
    if masks:
        run_dir.write_table("masks", masks_frame(masks))
    run_dir.write_table("rounds", pd.DataFrame(round_rows))
    comm = ledger.to_frame()
    clients = with_traffic(pd.DataFrame(client_rows), comm).reindex(columns=CLIENT_COLUMNS)
    dtypes = {c: ("string" if c in _TEXT else _INTS.get(c, "float64")) for c in CLIENT_COLUMNS}
    run_dir.write_table("clients", clients.astype(dtypes))
    run_dir.write_table("comm", comm)


def with_traffic(clients: pd.DataFrame, comm: pd.DataFrame) -> pd.DataFrame:
    """Each client row plus its messages of that round and phase from the ledger: message
    bytes down and up, and the link model's transfer time (both directions, NaN if unset)."""
    if clients.empty or comm.empty:
        return clients.assign(
            message_bytes_down=np.nan, message_bytes_up=np.nan, transfer_seconds=np.nan
        )
    keys = ["round", "partition_id", "phase"]
    traffic = comm.rename(columns={"kind": "phase"})
    per_direction = traffic.pivot_table(
        index=keys, columns="direction", values="message_bytes", aggfunc="sum"
    ).rename(columns={"down": "message_bytes_down", "up": "message_bytes_up"})
    transfer = traffic.groupby(keys)["transfer_seconds"].sum(min_count=1)
    merged = per_direction.join(transfer).reset_index()
    for column in ("message_bytes_down", "message_bytes_up"):
        if column not in merged:
            merged[column] = np.nan
    return clients.merge(merged, on=keys, how="left")


TRAFFIC_COLUMNS = ("message_bytes_down", "message_bytes_up", "transfer_seconds")


def restore_tables(
    run_dir: RunDirectory, last_round: int
) -> tuple[list[dict], list[dict], CommLedger]:
    """The round rows, client rows and ledger of a run directory up to ``last_round``: what a
    resumed strategy continues from (later rows belong to the round that never completed)."""
    rounds = pd.read_parquet(run_dir.path / "rounds.parquet")
    clients = pd.read_parquet(run_dir.path / "clients.parquet")
    comm = pd.read_parquet(run_dir.path / "comm.parquet")
    round_rows = rounds[rounds["round"] <= last_round].to_dict("records")
    kept = clients[clients["round"] <= last_round].drop(columns=list(TRAFFIC_COLUMNS))
    client_rows = [
        {k: (None if v is pd.NA else v) for k, v in row.items()} for row in kept.to_dict("records")
    ]
    ledger = CommLedger()
    for row in comm[comm["round"] <= last_round].to_dict("records"):
        ledger.record(**{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()})
    return round_rows, client_rows, ledger


@dataclass
class RunTables:
    """The rows a run's results tables are written from, shared by the strategy (round rows,
    client rows of good replies), the roster (rejected nodes) and the exchange (traffic in the
    ledger, failure rows). A resume replaces the rows in place, so every holder sees them."""

    run_dir: RunDirectory
    round_rows: list[dict] = field(default_factory=list)
    client_rows: list[dict] = field(default_factory=list)
    ledger: CommLedger = field(default_factory=CommLedger)

    def add(self, row: ClientRow) -> None:
        self.client_rows.append(row.as_dict())

    def write(self, masks: Mapping[int, Mapping[str, np.ndarray]] | None = None) -> None:
        write_tables(self.run_dir, self.round_rows, self.client_rows, self.ledger, masks)

    def restore(self, last_round: int) -> None:
        """The rows on disk up to ``last_round`` (``restore_tables``)."""
        self.round_rows, self.client_rows, self.ledger = restore_tables(self.run_dir, last_round)
