"""Evaluation protocols and local test sets (fedticket.learn.eval_protocols, fedticket.learn.data):
closed-form cases on real digits."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from flwr.app import RecordDict

from fedticket.analysis.summaries import over_seeds, run_summary
from fedticket.clients.fedavg import FedAvgClient
from fedticket.clients.state import ClientState
from fedticket.config import RunConfig
from fedticket.learn.data import (
    client_data,
    client_indices,
    global_test_indices,
    label_quotas,
    load_pool,
    partition,
    split_test_pool,
)
from fedticket.learn.eval_protocols import REFERENCE_IMAGES, reference_sample, running_best
from fedticket.learn.global_evaluator import build_global_evaluator
from fedticket.learn.models import build_model, load_state_arrays, state_arrays
from fedticket.learn.train import evaluate

SHARDS = {"partitioner": "shards", "shard-size": 100, "shards-per-client": 2}


def test_label_quotas_split_the_size_in_label_proportion_exactly() -> None:
    assert label_quotas(np.array([0] * 30 + [1] * 10), 200) == {0: 150, 1: 50}
    # equal counts, 200 / 3: the remainder goes to the smaller labels first
    assert label_quotas(np.array([4, 7, 9] * 5), 200) == {4: 67, 7: 67, 9: 66}
    assert label_quotas(np.array([3] * 40), 80) == {3: 80}
    assert label_quotas(np.array([], dtype=np.int64), 80) == {}
    # 90 % one label, 100 of each in the pool: 111 images (100 + 11), not 100 + 20
    assert label_quotas(np.array([0] * 90 + [1] * 10), 200, {0: 100, 1: 100}) == {0: 100, 1: 11}
    assert label_quotas(np.array([0, 0, 5]), 30, {0: 50}) == {0: 30}  # the pool lacks label 5


def test_test_pool_is_a_stratified_share_of_every_class_and_no_client_trains_on_it() -> None:
    config = RunConfig.from_run_config(SHARDS)
    labels = load_pool("mnist-offline").y
    train_pool, test_pool = split_test_pool(labels, config)
    assert np.bincount(labels[test_pool]).tolist() == [100] * 10  # 20 % of 500 per class
    assert len(np.intersect1d(train_pool, test_pool)) == 0 and len(train_pool) == 4000
    parts = partition(config, 10)
    trained = np.concatenate(parts)
    assert len(np.intersect1d(trained, test_pool)) == 0
    assert np.array_equal(global_test_indices(config, 10), test_pool)


def test_label_pool_tests_hold_only_the_clients_labels_and_none_of_its_images() -> None:
    config = RunConfig.from_run_config(SHARDS | {"local-test-size": 150})
    labels = load_pool("mnist-offline").y
    everyone = np.concatenate(partition(config, 10))
    for pid in range(10):
        train, val, test = client_indices(config, pid, 10)
        own = np.concatenate([train, val])
        assert sorted(own.tolist()) == sorted(partition(config, 10)[pid].tolist())  # all kept
        assert set(labels[test]) <= set(labels[own])
        assert len(np.intersect1d(test, everyone)) == 0
        counts = dict(zip(*np.unique(labels[test], return_counts=True), strict=True))
        # the pool holds 100 of each class: where a label would need more, every quota shrinks
        expected = label_quotas(labels[own], 150, dict.fromkeys(range(10), 100))
        assert counts == expected and max(expected.values()) <= 100
        shares = np.bincount(labels[own], minlength=10) / len(own)
        got = np.bincount(labels[test], minlength=10) / len(test)
        assert np.abs(shares - got).max() <= 1.5 / len(test) + 1e-9  # proportions kept
        data = client_data(config, pid, 10)
        assert len(data.y_test) == sum(expected.values())
        assert len(data.y_train) + len(data.y_val) == 200


def test_split_mode_keeps_each_clients_share_and_the_global_test_pools_them() -> None:
    config = RunConfig.from_run_config({"partitioner": "iid", "local-test": "split"})
    tests = [client_indices(config, pid, 5)[2] for pid in range(5)]
    assert sum(len(t) for t in tests) == 1000  # 20 % of each client's 1,000
    assert np.array_equal(global_test_indices(config, 5), np.sort(np.concatenate(tests)))


def test_reference_sample_is_80_fresh_images_or_all() -> None:
    a, b = reference_sample(200, seed=1), reference_sample(200, seed=2)
    assert len(a) == REFERENCE_IMAGES == 80 and len(set(a.tolist())) == 80
    assert not np.array_equal(a, b) and a.max() < 200
    assert reference_sample(30, seed=1).tolist() == list(range(30))


def test_running_best_is_a_max_that_ignores_nan() -> None:
    best = math.nan
    for score, expected in [(0.5, 0.5), (math.nan, 0.5), (0.4, 0.5), (0.9, 0.9)]:
        best = running_best(best, score)
        assert best == expected


def _fedavg_client(config: RunConfig) -> FedAvgClient:
    model = build_model(config.model, (1, 28, 28), 10, seed=config.seed)
    return FedAvgClient(config, client_data(config, 2, 10), ClientState(RecordDict(), 2), model)


def test_a_client_reports_served_and_its_own_trained_model_and_the_best_ever() -> None:
    config = RunConfig.from_run_config(SHARDS | {"lr": 0.05, "local-epochs": 2})
    client = _fedavg_client(config)
    served = state_arrays(build_model(config.model, (1, 28, 28), 10, seed=config.seed))
    before = client.evaluate(1, served, None)
    assert math.isnan(before["local-accuracy"]) and math.isnan(before["local-age"])

    trained, _, _ = client.fit(1, served, None)
    client.after_fit(1, trained)
    after = client.evaluate(2, served, None)  # evaluated one round after it trained
    data, model = client.data, client.model

    def accuracy(arrays: dict, pick: np.ndarray | None = None) -> float:
        load_state_arrays(model, arrays)
        pick = np.arange(len(data.y_test)) if pick is None else pick
        return evaluate(model, data.x_test[pick], data.y_test[pick]).accuracy

    assert after["served-accuracy"] == pytest.approx(accuracy(served))
    assert after["local-accuracy"] == pytest.approx(accuracy(trained))
    assert after["local-accuracy"] > after["served-accuracy"] + 0.2  # 2 epochs on its 2 labels
    assert after["local-age"] == 1
    # best-ever over the three reference scores so far, each on its own 80-image sample
    scores = [
        accuracy(served, reference_sample(len(data.y_test), client.seed_for(1, 0x5EF1))),
        accuracy(trained, reference_sample(len(data.y_test), client.seed_for(1, 0x5EF2))),
        accuracy(served, reference_sample(len(data.y_test), client.seed_for(2, 0x5EF1))),
    ]
    assert after["reference-accuracy"] == pytest.approx(max(scores))
    assert after["reference-accuracy"] >= after["local-accuracy"] - 0.1


def test_global_evaluator_scores_whole_models_and_nan_for_partial_ones() -> None:
    config = RunConfig.from_run_config(SHARDS)
    evaluator = build_global_evaluator(config, 10)
    assert len(evaluator.y) == 1000 and np.bincount(evaluator.y).tolist() == [100] * 10
    arrays = state_arrays(evaluator.model)
    assert 0 <= evaluator.evaluate(arrays).accuracy <= 1
    partial = {k: v for k, v in arrays.items() if not k.endswith("bias")}
    assert math.isnan(evaluator.evaluate(partial).accuracy)


def test_run_summary_reports_final_and_last_k_and_seeds_mean_std() -> None:
    rounds = pd.DataFrame(
        {
            "round": [1, 2, 3, 4, 5],
            "served_accuracy": [0.1, np.nan, 0.5, 0.6, 0.7],
            "served_accuracy_std": [0.0, np.nan, 0.1, 0.1, 0.2],
            "global_accuracy": [0.2, np.nan, 0.3, 0.3, 0.6],
        }
    )
    summary = run_summary(rounds, k=3)
    assert summary["served_final"] == 0.7 and summary["served_last3"] == pytest.approx(0.6)
    assert summary["global_last3"] == pytest.approx(0.4) and summary["served_client_std"] == 0.2
    assert math.isnan(summary["local_final"])  # a table without the column
    # a protocol scored in a round without served scores (every evaluate reply failed) counts
    only_global = rounds.assign(served_accuracy=np.nan)
    assert run_summary(only_global)["global_final"] == 0.6
    table = pd.DataFrame(
        {
            "algo": ["a", "a", "b", "c", "c"],
            "seed": [1, 2, 1, 1, 2],
            "acc": [0.5, 0.7, 0.9, 0.5, np.nan],
        }
    )
    seeds = over_seeds(table, ["algo"])
    assert seeds["acc_mean"].iloc[:2].tolist() == pytest.approx([0.6, 0.9])
    assert seeds["acc_std"].iloc[0] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert math.isnan(seeds["acc_std"].iloc[1]) and seeds["seeds"].tolist() == [2, 1, 2]
    assert math.isnan(seeds["acc_mean"].iloc[2])  # one of its 2 seeds has no value: not 0.5


def test_reproduction_tables_name_the_papers_protocol_and_give_every_protocol() -> None:
    from benchmarks.common import protocol_tables

    rows = []
    for variant, base in (("FedAvg", 0.5), ("LotteryFL", 0.6)):
        for seed, shift in ((1, 0.0), (2, 0.1)):
            row = {"variant": variant, "seed": seed, "message_MB": 10.0 + seed}
            for k, protocol in enumerate(("served", "local", "global", "reference")):
                value = base + shift + k / 100
                row |= {f"{protocol}_last3": value, f"{protocol}_final": value + 0.01}
            rows.append(row | {"served_client_std": 0.2, "final_density": 1.0})
    paper = {"FedAvg": "global", "LotteryFL": "reference"}
    table_a, table_b = protocol_tables(pd.DataFrame(rows), paper)
    assert table_a["paper's protocol"].tolist() == ["global", "reference"]
    spread = np.std([0.0, 0.1], ddof=1)
    assert table_a.iloc[0, 2] == f"{0.57:.3f} ± {spread:.3f}"  # FedAvg global: 0.52, 0.62
    assert table_a.iloc[1, 2] == f"{0.68:.3f} ± {spread:.3f}"  # LotteryFL reference
    assert table_b.loc[1, "served"] == f"{0.65:.3f} ± {spread:.3f}"
    assert table_b["seeds"].tolist() == [2, 2]


@pytest.mark.parametrize(
    ("algorithm", "extra", "has_global"),
    [
        ("fedavg", {}, True),
        ("lotteryfl", {}, True),
        ("fedltn", {"model": "mnist-cnn-bn"}, False),  # BatchNorm never reaches the server
        ("flash", {"init-epochs": 1, "density": 0.2}, True),
    ],
)
def test_every_algorithm_reports_every_protocol_through_its_real_round_loop(
    tmp_path, flower_task_identity, algorithm: str, extra: dict, has_global: bool
) -> None:
    from fedticket.simulations.server_app import run_federation
    from tests.loopback import LoopbackGrid, three_client_config

    run_config = three_client_config(tmp_path, algorithm=algorithm, partitioner="shards") | extra
    run_config |= {"shard-size": 100, "lr": 0.05}
    strategy = run_federation(LoopbackGrid(3, run_config), RunConfig.from_run_config(run_config))
    rounds = pd.read_parquet(strategy.run_dir.path / "rounds.parquet")
    for protocol in ("served", "local", "reference"):
        assert rounds[f"{protocol}_accuracy"].between(0, 1).all(), protocol
    assert (rounds["local_clients"] == 3).all() and (rounds["local_age"] == 0).all()
    assert rounds["global_accuracy"].between(0, 1).all() == has_global
    assert rounds["global_accuracy"].isna().all() != has_global
    reference = rounds["reference_accuracy"].to_numpy()
    assert np.all(np.diff(reference) >= 0)  # a running max (mean of per-client maxima)
    clients = pd.read_parquet(strategy.run_dir.path / "clients.parquet")
    evals = clients[clients["phase"] == "evaluate"]
    assert evals["local_accuracy"].notna().all() and evals["served_accuracy"].notna().all()
    # local-test=label-pool: each client scores 200 held-out images of its own labels (2 shards)
    assert (evals["num_examples"] <= 200).all()


def test_the_server_carries_a_clients_best_ever_over_a_lost_client_state(tmp_path) -> None:
    from fedticket.store.checkpoints import load_checkpoint
    from fedticket.store.results import RunDirectory
    from fedticket.strategies.fedavg import FedAvg

    config = RunConfig.from_run_config({"output-root": str(tmp_path)})
    template = state_arrays(build_model(config.model, (1, 28, 28), 10, seed=config.seed))
    strategy = FedAvg(config, template, RunDirectory(tmp_path, "fedavg", "x"))
    # the client's own running max restarts at 0.5 after its state is lost; the table keeps 0.9
    reported = [0.7, 0.9, 0.5, math.nan, 0.95]
    kept = [strategy.keep_reference_best(3, {"reference-accuracy": r}) for r in reported]
    assert kept == [0.7, 0.9, 0.9, 0.9, 0.95]
    assert math.isnan(strategy.keep_reference_best(4, {}))
    strategy.save_checkpoint(1, template)  # restore() reads it back (tests/test_reliability.py)
    _arrays, meta = load_checkpoint(strategy.checkpoint_path, config.config_hash())
    assert meta["reference-best"]["3"] == 0.95 and math.isnan(meta["reference-best"]["4"])
