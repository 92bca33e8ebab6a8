"""Hostile and broken clients through the real strategy and client code (in-process grid).

Each case makes one client's reply wrong in one way (a record of the wrong type, a NaN count,
NaN weights, a forged payload header, a claim to someone else's partition, ...). The run must
finish with the other clients, record a failure row with a reason a person can act on, count
it in the round row, and keep a finite global model.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fedticket.config import RunConfig
from fedticket.simulations.server_app import run_federation
from fedticket.sparse.masks import mask_digest
from fedticket.wire import codec
from fedticket.wire.records import encode_payload
from tests.loopback import LoopbackGrid

pytestmark = pytest.mark.usefixtures("flower_task_identity")

BAD = 1  # the partition whose replies are tampered with


def _config(root, **overrides) -> dict:
    return {
        "algorithm": "fedavg",
        "model": "mlp",
        "num-rounds": 2,
        "partitioner": "iid",
        "acc-threshold": -1.0,
        "min-train-clients": 2,
        "min-evaluate-clients": 2,
        "min-available-clients": 2,
        "output-root": str(root),
    } | overrides


def _run(root, faults: dict, **overrides):
    config = _config(root, **overrides)
    grid = LoopbackGrid(3, config)
    grid.faults.update(faults)
    strategy = run_federation(grid, RunConfig.from_run_config(config))
    return strategy, pd.DataFrame(strategy.client_rows)


def _replace(request: Message, reply: Message, **records) -> Message:
    """``reply`` with some records replaced (None removes one)."""
    content = dict(reply.content.items())
    for name, record in records.items():
        if record is None:
            content.pop(name, None)
        else:
            content[name] = record
    return Message(RecordDict(content), reply_to=request)


def _metrics(**changes) -> Callable[[Message, Message], Message]:
    def fault(request: Message, reply: Message) -> Message:
        metrics = dict(reply.content["metrics"]) | changes
        return _replace(request, reply, metrics=MetricRecord(metrics))

    return fault


def _without(name: str) -> Callable[[Message, Message], Message]:
    def fault(request: Message, reply: Message) -> Message:
        metrics = {k: v for k, v in reply.content["metrics"].items() if k != name}
        return _replace(request, reply, metrics=MetricRecord(metrics))

    return fault


def _decoded(reply: Message) -> dict[str, np.ndarray]:
    header, data = reply.content["payload"], reply.content["arrays"]["payload"].data
    tensors, offset = {}, 0
    for name, length in zip(header["tensors"], header["lengths"], strict=True):
        tensors[name] = codec.decode_tensor(data[offset : offset + length])[0]
        offset += length
    return tensors


def _weights(change: Callable[[dict[str, np.ndarray]], None]):
    def fault(request: Message, reply: Message) -> Message:
        tensors = _decoded(reply)
        change(tensors)
        arrays, header = encode_payload(tensors)
        return _replace(request, reply, arrays=arrays, payload=header)

    return fault


def _first_nan(tensors: dict[str, np.ndarray]) -> None:
    next(iter(tensors.values())).reshape(-1)[:3] = np.nan


def _one_inf(tensors: dict[str, np.ndarray]) -> None:
    list(tensors.values())[-1].reshape(-1)[0] = np.inf


def _payload_header(**changes):
    def fault(request: Message, reply: Message) -> Message:
        header = ConfigRecord(dict(reply.content["payload"]) | changes)
        return _replace(request, reply, payload=header)

    return fault


TRAIN_CASES = {
    "arrays is a ConfigRecord": (
        lambda q, r: _replace(q, r, arrays=ConfigRecord({"x": 1})),
        "malformed",
        "'arrays' is a ConfigRecord",
    ),
    "arrays is a MetricRecord": (
        lambda q, r: _replace(q, r, arrays=MetricRecord({"x": 1.0})),
        "malformed",
        "'arrays' is a MetricRecord",
    ),
    "metrics is a ConfigRecord": (
        lambda q, r: _replace(q, r, metrics=ConfigRecord({"num-examples": 1})),
        "malformed",
        "'metrics' is a ConfigRecord",
    ),
    "no metrics": (lambda q, r: _replace(q, r, metrics=None), "malformed", "no 'metrics'"),
    "payload without arrays": (
        lambda q, r: _replace(q, r, arrays=None),
        "malformed",
        "both 'arrays' and 'payload'",
    ),
    "num-examples NaN": (_metrics(**{"num-examples": math.nan}), "invalid", "is NaN"),
    "num-examples inf": (_metrics(**{"num-examples": math.inf}), "invalid", "is inf"),
    "num-examples negative": (_metrics(**{"num-examples": -5}), "invalid", "outside"),
    "num-examples 1e15": (_metrics(**{"num-examples": 1e15}), "invalid", "outside"),
    "num-examples above the handshake": (
        _metrics(**{"num-examples": 10**6}),
        "invalid",
        "exceeds its handshake's num-train",
    ),
    "num-examples fractional": (_metrics(**{"num-examples": 2.5}), "invalid", "whole number"),
    "train-loss NaN": (_metrics(**{"train-loss": math.nan}), "invalid", "'train-loss' is NaN"),
    "train-loss missing": (
        _without("train-loss"),
        "invalid",
        "lacks the metrics ['train-loss']",
    ),
    "another partition's id": (_metrics(**{"partition-id": 2}), "invalid", "claims partition 2"),
    "too many metrics": (
        _metrics(**{f"m{i}": 0.0 for i in range(80)}),
        "malformed",
        "more than the 64 allowed",
    ),
    "NaN weights": (_weights(_first_nan), "invalid", "holds 3 NaN or infinite values"),
    "inf weights": (_weights(_one_inf), "invalid", "holds 1 NaN or infinite values"),
    "an extra 64 MB record": (
        lambda q, r: _replace(
            q, r, junk=ArrayRecord({"x": Array(np.zeros(16 * 2**20, np.float32))})
        ),
        "malformed",
        "unexpected records ['junk']",
    ),
    "a masked tensor, empty digest, no held mask": (
        _payload_header(masked=["fc1.weight"], **{"mask-digest": mask_digest({})}),
        "malformed",
        "bad train payload",
    ),
}


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_a_bad_train_reply_is_a_failure_row_and_the_run_goes_on(tmp_path, case) -> None:
    fault, status, reason = TRAIN_CASES[case]
    strategy, rows = _run(tmp_path, {(1, BAD, "train"): fault})
    bad = rows[(rows["round"] == 1) & (rows["phase"] == "train") & (rows["status"] != "ok")]
    assert bad["partition_id"].tolist() == [BAD]
    assert bad["status"].iloc[0] == status and reason in bad["reason"].iloc[0], bad.iloc[0]
    first = strategy.round_rows[0]
    assert first["train_clients"] == 2 and first["train_failures"] == 1
    assert first[f"{status}_replies"] == 1
    assert len(strategy.round_rows) == 2 and strategy.round_rows[1]["train_failures"] == 0
    assert all(np.isfinite(t).all() for t in strategy.global_model().values())
    assert math.isfinite(first["train_loss"])


EVALUATE_CASES = {
    "num-examples NaN": (_metrics(**{"num-examples": math.nan}), "is NaN"),
    "served-accuracy NaN": (_metrics(**{"served-accuracy": math.nan}), "is NaN"),
    "served-accuracy 1.5": (_metrics(**{"served-accuracy": 1.5}), "outside [0, 1]"),
    "served-loss -1": (_metrics(**{"served-loss": -1.0}), "outside"),
    "num-examples above the handshake": (
        _metrics(**{"num-examples": 10**6}),
        "exceeds its handshake's num-test",
    ),
    "evaluate reply with tensors": (
        lambda q, r: _replace(q, r, arrays=ArrayRecord({"x": Array(np.zeros(3, np.float32))})),
        "unexpected records ['arrays']",
    ),
}


@pytest.mark.parametrize("case", list(EVALUATE_CASES))
def test_a_bad_evaluate_reply_is_a_failure_row(tmp_path, case) -> None:
    fault, reason = EVALUATE_CASES[case]
    strategy, rows = _run(tmp_path, {(1, BAD, "evaluate"): fault})
    bad = rows[(rows["phase"] == "evaluate") & (rows["status"] != "ok")]
    assert bad["partition_id"].tolist() == [BAD] and reason in bad["reason"].iloc[0]
    first = strategy.round_rows[0]
    assert first["eval_clients"] == 2 and first["eval_failures"] == 1
    assert math.isfinite(first["served_accuracy"]) and 0 <= first["served_accuracy"] <= 1


HANDSHAKE_CASES = {
    "no partition-id": (
        _without("partition-id"),
        "lacks the metrics ['partition-id']",
    ),
    "NaN partition-id": (_metrics(**{"partition-id": math.nan}), "is NaN"),
    "partition-id beyond num-partitions": (
        _metrics(**{"partition-id": 7}),
        "is not below its num-partitions 3",
    ),
    "negative num-train": (_metrics(**{"num-train": -1}), "outside"),
    "NaN link": (_metrics(**{"link-up-mbps": math.nan}), "is NaN"),
    "control characters in the node description": (
        lambda q, r: _replace(q, r, node=ConfigRecord({"device-class": "pi4\x1b[31m"})),
        "must be printable text",
    ),
}


@pytest.mark.parametrize("case", list(HANDSHAKE_CASES))
def test_a_bad_handshake_leaves_that_node_out_and_the_run_goes_on(tmp_path, case) -> None:
    fault, reason = HANDSHAKE_CASES[case]
    strategy, rows = _run(tmp_path, {(0, BAD, "query"): fault})
    assert sorted(n.partition_id for n in strategy.nodes.values()) == [0, 2]
    (why,) = strategy.rejected.values()
    assert reason in why, why
    query = rows[rows["phase"] == "query"]
    assert query["node_id"].tolist() == [1000 + BAD] and reason in query["reason"].iloc[0]
    assert [r["train_clients"] for r in strategy.round_rows] == [2, 2]


def test_two_nodes_claiming_one_partition_are_both_left_out(tmp_path) -> None:
    strategy, _rows = _run(
        tmp_path,
        {(0, 2, "query"): _metrics(**{"partition-id": 0})},
        **{"min-available-clients": 1, "min-train-clients": 1, "min-evaluate-clients": 1},
    )
    assert [n.partition_id for n in strategy.nodes.values()] == [1]
    assert len(strategy.rejected) == 2
    assert all("2 nodes claim partition-id 0" in r for r in strategy.rejected.values())
    query = pd.DataFrame(strategy.client_rows).query("phase == 'query'")
    assert sorted(query["node_id"]) == [1000, 1002] and set(query["partition_id"]) == {0}


def test_forged_masks_sent_false_over_sent_positions_is_refused(tmp_path) -> None:
    """LotteryFL prunes in round 1 and sends its new mask's positions; a header that says
    they were not sent must not make the server aggregate under a mask it does not hold."""
    strategy, rows = _run(
        tmp_path,
        {(1, BAD, "train"): _payload_header(**{"masks-sent": False})},
        algorithm="lotteryfl",
        model="mnist-cnn",
        **{"num-rounds": 1},
    )
    bad = rows[(rows["phase"] == "train") & (rows["status"] != "ok")]
    assert bad["partition_id"].tolist() == [BAD] and bad["status"].iloc[0] == "malformed"
    held = strategy.masks[BAD]
    assert all(m.all() for m in held.values())  # still the all-ones mask it was sent
    # the evaluate message resent that mask: the server's record of what the client holds
    # is the mask it aggregates under
    assert strategy.held[BAD] == mask_digest(held)


def test_a_client_that_diverges_every_round_stops_the_run_with_its_reason(tmp_path) -> None:
    from fedticket.strategies.base import NoClientsError

    nan_loss = _metrics(**{"train-loss": math.nan})
    faults = {(1, pid, "train"): nan_loss for pid in range(3)}
    with pytest.raises(NoClientsError, match="fewer than min-train-replies"):
        _run(tmp_path, faults)
    run_dir = (tmp_path / "fedavg" / "latest").resolve()
    status = (run_dir / "status.json").read_text()
    assert '"failed"' in status and "min-train-replies" in status
