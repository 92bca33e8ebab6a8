"""Per-client sparse payloads through the real strategy and client code (in-process grid)."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, Message, RecordDict

from fedticket.config import RunConfig
from fedticket.simulations.server_app import run_federation
from fedticket.store.results import load_run
from fedticket.strategies.fedavg import FedAvg
from tests.loopback import LoopbackGrid

pytestmark = pytest.mark.usefixtures("flower_task_identity")

DENSITIES = {0: 1.0, 1: 0.5, 2: 0.2, 3: 0.05}


class FixedMaskFedAvg(FedAvg):
    """FedAvg where client k trains a fixed random sub-network of density DENSITIES[k]."""

    def client_masks(self, server_round, node):
        if node.partition_id not in self.masks:
            rng = np.random.default_rng(node.partition_id)
            d = DENSITIES[node.partition_id]
            self.masks[node.partition_id] = {
                n: rng.random(self.template[n].shape) < d for n in self.prunable
            }
        return self.masks[node.partition_id]


def _run(tmp_path, faults=None, rounds=3, before=None, **overrides):
    run_config = {
        "num-rounds": rounds,
        "partitioner": "iid",
        "min-train-clients": 4,
        "min-evaluate-clients": 4,
        "output-root": str(tmp_path),
    } | overrides
    grid = LoopbackGrid(4, run_config)
    grid.faults.update(faults or {})
    grid.before.update(before or {})
    strategy = run_federation(grid, RunConfig.from_run_config(run_config), FixedMaskFedAvg)
    return strategy, load_run(strategy.run_dir.path), strategy.template


def test_payloads_follow_each_clients_density_and_masks_are_sent_once(tmp_path) -> None:
    strategy, run, initial = _run(tmp_path)
    comm = run["comm"]
    train_down = comm[(comm["kind"] == "train") & (comm["direction"] == "down")]
    by_pid = train_down.groupby("partition_id")["payload_bytes"].first()
    dense = sum(t.nbytes for t in initial.values())
    assert by_pid[0] > by_pid[1] > by_pid[2] > by_pid[3]
    for pid, d in DENSITIES.items():
        kept = sum(int(strategy.masks[pid][n].sum()) for n in strategy.prunable)
        values = 4 * (kept + sum(initial[n].size for n in initial if n not in strategy.prunable))
        assert values <= by_pid[pid] < values + 0.35 * d * dense + 400 + (d < 1) * 0.05 * dense
    # positions go down once; afterwards the client holds the mask: 0 position bytes
    first = train_down[train_down["round"] == 1].set_index("partition_id")["position_bytes"]
    later = train_down[train_down["round"] > 1]["position_bytes"]
    assert (first.loc[[1, 2, 3]] > 0).all() and first.loc[0] == 0  # density 1: no positions
    assert (later == 0).all()
    assert (comm[comm["direction"] == "up"]["position_bytes"] == 0).all()  # masks unchanged
    rounds = run["rounds"]
    assert (rounds["malformed_replies"] == 0).all()
    assert np.isclose(
        rounds["mean_density"].iloc[0],
        np.mean(
            [
                sum(int(strategy.masks[p][n].sum()) for n in strategy.prunable)
                / sum(strategy.masks[p][n].size for n in strategy.prunable)
                for p in range(4)
            ]
        ),
    )


def test_ledger_row_equals_a_hand_computed_payload(tmp_path) -> None:
    strategy, run, initial = _run(tmp_path, rounds=1)
    comm = run["comm"]
    row = comm[
        (comm["kind"] == "train") & (comm["direction"] == "up") & (comm["partition_id"] == 3)
    ]
    # the client replies with its trained kept entries under the mask it received, no positions:
    # per tensor the codec header (magic, version, scheme, dtype, ndim, dims, count, position
    # length 0, parameter 0, the 4-byte held-mask check for masked tensors, crc32) + float32s
    expected = 0
    for name, t in initial.items():
        mask = strategy.masks[3].get(name)
        kept = t.size if mask is None else int(mask.sum())
        header = 5 + sum(_varint_len(d) for d in t.shape) + _varint_len(kept) + 1 + 1 + 4
        header += 4 if mask is not None else 0  # held-mask check
        expected += header + 4 * kept
    assert int(row["payload_bytes"].iloc[0]) == expected


def _varint_len(x: int) -> int:
    return max(1, (x.bit_length() + 6) // 7)


def test_malformed_reply_is_dropped_logged_and_counted(tmp_path) -> None:
    def corrupt(request: Message, reply: Message) -> Message:
        arrays = reply.content["arrays"]
        name = next(iter(arrays.keys()))
        data = bytearray(arrays[name].data)
        data[-1] ^= 0xFF
        arrays[name] = Array(dtype="uint8", shape=(len(data),), stype="raw", data=bytes(data))
        return Message(RecordDict(dict(reply.content.items())), reply_to=request)

    def lose(request: Message, reply: Message) -> None:
        return None

    _strategy, run, _ = _run(tmp_path, faults={(2, 1, "train"): corrupt, (2, 3, "train"): lose})
    rounds = run["rounds"].set_index("round")
    assert rounds.loc[2, "malformed_replies"] == 1 and rounds.loc[2, "train_failures"] == 2
    assert rounds.loc[2, "train_clients"] == 2 and rounds.loc[3, "train_clients"] == 4
    clients = run["clients"]
    bad = clients[(clients["round"] == 2) & (clients["status"] != "ok")].set_index("partition_id")
    assert bad.loc[1, "status"] == "malformed" and "checksum mismatch" in bad.loc[1, "reason"]
    assert bad.loc[3, "status"] == "timeout"
    # after a failure the server no longer trusts the client's mask state and resends it
    comm = run["comm"]
    resent = comm[
        (comm["round"] == 2) & (comm["kind"] == "evaluate") & (comm["direction"] == "down")
    ]
    assert (resent.set_index("partition_id").loc[[1, 3], "position_bytes"] > 0).all()


def test_client_that_lost_its_mask_fails_one_round_and_gets_the_mask_again(tmp_path) -> None:
    def restart(context) -> None:  # a SuperNode restart loses context.state
        context.state = RecordDict()

    _strategy, run, _ = _run(tmp_path, before={(2, 2, "train"): restart})
    clients = run["clients"]
    failed = clients[
        (clients["round"] == 2) & (clients["phase"] == "train") & (clients["partition_id"] == 2)
    ]
    assert failed["status"].iloc[0] == "error" and "stale mask state" in failed["reason"].iloc[0]
    comm = run["comm"]
    again = comm[
        (comm["round"] == 2) & (comm["kind"] == "evaluate") & (comm["direction"] == "down")
    ]
    assert again.set_index("partition_id").loc[2, "position_bytes"] > 0
    assert (clients[clients["round"] == 3]["status"] == "ok").all()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_values_halve_the_value_bytes(tmp_path, dtype) -> None:
    _, full, _ = _run(tmp_path / "f32", rounds=1)
    _, half, _ = _run(tmp_path / dtype, rounds=1, **{"value-dtype": dtype})

    def up(run):
        comm = run["comm"]
        return comm[(comm["kind"] == "train") & (comm["direction"] == "up")]["payload_bytes"].sum()

    assert 0.45 < up(half) / up(full) < 0.56


def test_link_model_estimates_transfer_time_per_node(tmp_path) -> None:
    run_config = {
        "num-rounds": 1,
        "partitioner": "iid",
        "output-root": str(tmp_path),
        "link-up-mbps": 10.0,
        "link-down-mbps": 40.0,
        "link-latency-ms": 20.0,
    }
    grid = LoopbackGrid(2, run_config, node_configs={1: {"link-up-mbps": 1.0}})  # a slow uplink
    strategy = run_federation(grid, RunConfig.from_run_config(run_config))
    comm = strategy.ledger.to_frame()
    up = comm[(comm["kind"] == "train") & (comm["direction"] == "up")].set_index("partition_id")
    for pid, mbps in ((0, 10.0), (1, 1.0)):
        expected = 0.020 + up.loc[pid, "message_bytes"] * 8 / (mbps * 1e6)
        assert np.isclose(up.loc[pid, "transfer_seconds"], expected)
    down = comm[(comm["kind"] == "train") & (comm["direction"] == "down")]
    assert np.allclose(down["transfer_seconds"], 0.020 + down["message_bytes"] * 8 / 40e6)
