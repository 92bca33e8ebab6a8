"""``evaluate-with-train`` (issue #24): round r's client evaluation rides on round r+1's train
messages. The same clients score the same models in the same order with the same seeds, so
every protocol column equals the two-message run's; only the messages and their bytes differ.
Failures of the carrying message, bad evaluation records and a crash between the two rounds
are each recorded, never lost or counted twice."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from flwr.app import Message, MetricRecord

from fedticket.config import ConfigError, RunConfig
from fedticket.simulations.check_config import main as check_config_main
from fedticket.simulations.server_app import run_federation
from fedticket.strategies import STRATEGIES
from fedticket.wire.protocol import EVALUATION, Instructions, ProtocolError
from tests.loopback import LoopbackGrid, three_client_config

pytestmark = pytest.mark.usefixtures("flower_task_identity")

#: small shares (60 images a client): the equalities hold whatever the size
SMALL = {"partitioner": "sampled", "samples-per-client": 60}
PROTOCOL_COLUMNS = [
    "train_clients",
    "eval_clients",
    "eval_failures",
    "train_loss",
    "served_accuracy",
    "served_accuracy_std",
    "served_loss",
    "local_accuracy",
    "local_age",
    "reference_accuracy",
    "served_accuracy_pooled",
    "global_accuracy",
    "mean_density",
]


def _config(root, **overrides) -> dict:
    return three_client_config(root, **SMALL | {"num-rounds": 3} | overrides)


def _run(run_config: dict, grid: LoopbackGrid | None = None):
    grid = grid or LoopbackGrid(3, run_config)
    strategy = run_federation(grid, RunConfig.from_run_config(run_config))
    return strategy, grid


def _kinds(grid: LoopbackGrid) -> dict[tuple[int, str], int]:
    counts: dict[tuple[int, str], int] = {}
    for message in grid.delivered:
        key = (int(message.content["config"]["server-round"]), message.metadata.message_type)
        counts[key] = counts.get(key, 0) + 1
    return counts


@pytest.mark.parametrize(
    "algorithm",
    [{}, {"algorithm": "fedltn", "model": "mnist-cnn-bn"}],
    ids=["lotteryfl", "fedltn"],
)
def test_fused_rounds_score_exactly_what_two_message_rounds_score(tmp_path, algorithm) -> None:
    two, two_grid = _run(_config(tmp_path / "two", **algorithm))
    one, one_grid = _run(_config(tmp_path / "one", **{"evaluate-with-train": True} | algorithm))
    a, b = pd.DataFrame(two.round_rows), pd.DataFrame(one.round_rows)
    assert b["round"].tolist() == [1, 2, 3]
    pd.testing.assert_frame_equal(a[PROTOCOL_COLUMNS], b[PROTOCOL_COLUMNS], check_exact=True)
    assert a["eval_clients"].tolist() == [3, 3, 3]
    # 3 train messages a round; evaluate messages only after the last round
    assert _kinds(two_grid) == {(0, "query"): 3} | {
        (r, kind): 3 for r in (1, 2, 3) for kind in ("train", "evaluate")
    }
    assert _kinds(one_grid) == {(0, "query"): 3, (1, "train"): 3, (2, "train"): 3} | {
        (3, "train"): 3,
        (3, "evaluate"): 3,
    }
    # the fused rounds' downlink is the train messages alone; the evaluation's metrics go up
    # in the train replies, so the uplink grows by a few bytes a client
    assert (b["message_bytes_down"][:2] < a["message_bytes_down"][:2]).all()
    # round 3: the same messages, its train messages naming round 2 to evaluate in the header
    assert 0 < b["message_bytes_down"][2] - a["message_bytes_down"][2] <= 3 * 32
    ledger = one.ledger.to_frame()
    assert set(ledger[ledger["round"].between(1, 2)]["kind"]) == {"train"}
    evaluate_rows = [r for r in one.client_rows if r["phase"] == "evaluate"]
    assert sorted((r["round"], r["partition_id"]) for r in evaluate_rows) == [
        (r, pid) for r in (1, 2, 3) for pid in (0, 1, 2)
    ]


def test_a_lost_train_message_takes_its_evaluation_with_it_and_a_bad_evaluation_only_itself(
    tmp_path,
) -> None:
    config = _config(tmp_path, **{"evaluate-with-train": True})
    grid = LoopbackGrid(3, config)
    grid.faults[(2, 0, "train")] = lambda request, reply: None  # lost on the way back

    def overclaimed(request: Message, reply: Message) -> Message:
        evaluation = dict(reply.content[EVALUATION])
        reply.content[EVALUATION] = MetricRecord(evaluation | {"served-accuracy": 2.0})
        return reply

    grid.faults[(2, 1, "train")] = overclaimed
    strategy, _ = _run(config, grid)
    rows = pd.DataFrame(strategy.round_rows).set_index("round")
    assert rows.loc[1, "eval_clients"] == 1 and rows.loc[1, "eval_failures"] == 2
    assert rows.loc[2, "train_clients"] == 2  # partition 1's training update was still used
    failures = {
        (r["round"], r["phase"], r["partition_id"]): (r["status"], r["reason"])
        for r in strategy.client_rows
        if r["status"] != "ok"
    }
    assert failures[(2, "train", 0)][0] == "timeout"
    status, reason = failures[(1, "evaluate", 0)]
    assert status == "timeout" and reason.startswith("the train message carrying it failed")
    status, reason = failures[(1, "evaluate", 1)]
    assert status == "invalid" and "served-accuracy" in reason
    assert set(failures) == {(2, "train", 0), (1, "evaluate", 0), (1, "evaluate", 1)}
    assert not math.isnan(rows.loc[1, "served_accuracy"])  # partition 2's score


class Crash(RuntimeError):
    pass


def test_a_crash_before_the_carrying_round_still_evaluates_the_checkpointed_round(
    tmp_path,
) -> None:
    overrides = {
        "algorithm": "fedltn",
        "model": "mnist-cnn-bn",
        "evaluate-with-train": True,
        "client-state": "disk",
    }
    reference, _ = _run(_config(tmp_path / "a", **overrides))
    config = _config(tmp_path / "b", **overrides)
    crashing = LoopbackGrid(3, config)

    def crash(context) -> None:
        raise Crash("power cut")

    crashing.before[(3, 1, "train")] = crash  # round 2 is checkpointed, not yet evaluated
    with pytest.raises(Crash):
        _run(config, crashing)
    run_dir = (tmp_path / "b" / "fedltn" / "latest").resolve()
    assert pd.read_parquet(run_dir / "rounds.parquet")["round"].tolist() == [1]
    resumed, _ = _run(config)  # a new grid: clients continue from their disk snapshots
    pd.testing.assert_frame_equal(
        pd.DataFrame(reference.round_rows)[PROTOCOL_COLUMNS],
        pd.read_parquet(run_dir / "rounds.parquet")[PROTOCOL_COLUMNS],
        check_exact=True,
    )
    assert math.isnan(pd.DataFrame(resumed.round_rows).set_index("round").loc[2, "seconds"])


@pytest.mark.parametrize("algorithm", ["fedltp", "cell"])
def test_algorithms_whose_evaluation_is_another_model_refuse_the_option(algorithm) -> None:
    config = RunConfig.from_run_config({"algorithm": algorithm, "evaluate-with-train": True})
    with pytest.raises(ConfigError, match="evaluate-with-train"):
        STRATEGIES[algorithm].check_config(config)
    STRATEGIES["lotteryfl"].check_config(RunConfig.from_run_config({"evaluate-with-train": True}))
    assert check_config_main(["--run-config", f'algorithm="{algorithm}"']) == 0
    args = ["--run-config", f'algorithm="{algorithm}" evaluate-with-train=true']
    assert check_config_main(args) != 0


def test_the_header_names_only_an_earlier_round_to_evaluate() -> None:
    header = Instructions(5, "lotteryfl", evaluate_round=4)
    assert Instructions.parse(header.to_dict()) == header
    assert "evaluate-round" not in Instructions(5, "lotteryfl").to_dict()
    for bad in (5, 6, 0, -1, "4", True):
        with pytest.raises(ProtocolError, match="evaluate-round"):
            Instructions.parse(header.to_dict() | {"evaluate-round": bad})


def test_a_client_that_cannot_fuse_refuses_a_header_asking_it_to(tmp_path) -> None:
    # a server that skipped its own check: CELL's client answers with an error, not a score
    config = _config(tmp_path, algorithm="cell", model="mnist-cnn", **{"cell-threshold": 0.12})
    grid = LoopbackGrid(3, config)
    deliver = grid.send_and_receive

    def asking(messages, *, timeout=None):
        messages = list(messages)
        for message in messages:
            header = message.content["config"]
            to_first = message.metadata.dst_node_id == min(grid.contexts)
            if (
                message.metadata.message_type == "train"
                and header["server-round"] == 2
                and to_first
            ):
                header["evaluate-round"] = 1
        return deliver(messages, timeout=timeout)

    grid.send_and_receive = asking
    strategy, _ = _run(config, grid)
    failed = [r for r in strategy.client_rows if r["status"] != "ok"]
    assert [(r["round"], r["phase"], r["partition_id"], r["status"]) for r in failed] == [
        (2, "train", 0, "error")
    ]
    assert "does not evaluate inside train messages" in failed[0]["reason"]


def test_each_algorithms_server_and_client_agree_on_fusing() -> None:
    from fedticket.clients import CLIENTS

    names = sorted(set(STRATEGIES) & set(CLIENTS))
    assert {n: STRATEGIES[n].fuses_evaluation for n in names} == {
        n: CLIENTS[n].fuses_evaluation for n in names
    }
    assert {n for n in names if not CLIENTS[n].fuses_evaluation} == {"cell", "fedltp"}
