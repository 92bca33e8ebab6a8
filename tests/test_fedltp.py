"""Fed-LTP: the spec's closed-form cases (docs/algorithms/fedltp.md section 5), the privacy
figures against closed forms, and federations on the loopback grid through the real strategy
and client code (the budget stop included)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from fedticket.algorithms.fedltp import (
    FedLTPSettings,
    decayed_lr,
    kept_budgets,
    retentions,
    sample_rate,
    submodel_for,
    ticket_probabilities,
)
from fedticket.config import ConfigError, RunConfig
from fedticket.learn.data import client_indices, global_test_indices, public_set, split_pool
from fedticket.learn.data.holdout import _pool_splits
from fedticket.privacy.accounting import ORDERS, ClientPrivacy
from fedticket.privacy.fedltp_theorem import theorem1_epsilon
from fedticket.privacy.zcdp import epsilon_from_rdp, gaussian_rho
from fedticket.simulations.server_app import run_federation
from fedticket.store.checkpoints import CheckpointError
from fedticket.strategies.fedltp import FedLTP
from fedticket.strategies.replies import InvalidReply, check_metrics
from tests.loopback import LoopbackGrid

DELTA = 1e-3
RUN = {
    "algorithm": "fedltp",
    "num-rounds": 3,
    "fraction-train": 1.0,
    "fraction-evaluate": 1.0,
    "min-train-clients": 4,
    "min-evaluate-clients": 4,
    "min-available-clients": 4,
    "partitioner": "iid",
    "fedltp-local-steps": 4,
    "fedltp-submodels": 3,
    "fedltp-tickets": 2,
    "fedltp-ticket-epochs": 1,
    "fedltp-noise-source": "seeded",
    "fedltp-epsilon": 0.0,
    "batch-size": 15,
    "client-state": "memory",
}


def _settings(**keys) -> FedLTPSettings:
    return RunConfig.from_run_config({"algorithm": "fedltp"} | keys).section(FedLTPSettings)


# ------------------------------------------------------------------ closed forms (spec 5)
def test_a_iterative_retentions_are_nested_powers_of_the_further_share() -> None:
    settings = _settings(**{"fedltp-pruned": 0.6, "fedltp-further": 0.1, "fedltp-submodels": 3})
    assert retentions(settings) == pytest.approx([0.36, 0.324, 0.2916])
    assert retentions(_settings(**{"fedltp-scheme": "one-shot", "fedltp-pruned": 0.6})) == [
        pytest.approx(0.4)
    ]
    assert kept_budgets({"w": 1000, "b": 3}, 0.2916) == {"w": 292, "b": 1}  # at least one


def test_newcomers_are_dealt_every_sub_model_before_any_repeats() -> None:
    deals = [submodel_for(position, 5, seed=7) for position in range(15)]
    for block in range(3):
        assert sorted(deals[5 * block : 5 * block + 5]) == list(range(5))
    assert deals == [submodel_for(position, 5, seed=7) for position in range(15)]
    assert deals != [submodel_for(position, 5, seed=8) for position in range(15)]


def test_the_ticket_is_picked_by_softmax_of_its_correct_count() -> None:
    np.testing.assert_allclose(
        ticket_probabilities([1, 2, 3]), np.exp([1, 2, 3]) / np.exp([1, 2, 3]).sum()
    )
    assert ticket_probabilities([5000, 4990]).sum() == pytest.approx(1.0)  # no overflow
    assert ticket_probabilities([5000, 4990])[0] > 0.9999


def test_local_step_size_and_poisson_rate() -> None:
    assert decayed_lr(0.01, 0.99, 1) == 0.01 and decayed_lr(0.01, 0.99, 3) == pytest.approx(
        0.01 * 0.99**2
    )
    assert sample_rate(15, 300) == 0.05 and sample_rate(15, 10) == 1.0
    assert sample_rate(15, 0) == 1.0  # no records: the bound that holds for any


# ------------------------------------------------------------------ privacy figures
@pytest.mark.parametrize("sigma", [0.8, 1.4])
def test_c_the_accountant_is_the_zcdp_sum_for_an_unsampled_gaussian(sigma) -> None:
    client = ClientPrivacy(sigma, sample_rate=1.0, steps_per_round=3)
    # rho adds up over 5 rounds x 3 steps; the accountant's RDP curve is exactly alpha rho
    assert client.rho(5) == pytest.approx(15 * gaussian_rho(sigma), rel=1e-9)
    order = ORDERS[10]
    assert client.spent(5, DELTA, orders=(order,)).epsilon == pytest.approx(
        epsilon_from_rdp(order, order * 15 * gaussian_rho(sigma), DELTA)
    )


def test_theorem1_in_closed_form_and_beside_the_library() -> None:
    sigma, scale, rounds = 1.4, 2.0, 10
    # unsampled: one Gaussian step of rho 1 / (2 sigma^2) and the validation's 1 / (2 lambda^2)
    # per round, at order alpha an RDP of rounds x alpha x (both), converted by Eq. 22
    expected = min(
        epsilon_from_rdp(a, rounds * a * (1 / (2 * sigma**2) + 1 / (2 * scale**2)), DELTA)
        for a in ORDERS
    )
    assert theorem1_epsilon(rounds, sigma, 1.0, scale, DELTA) == pytest.approx(expected)
    # one step per round and no validation: the paper's composition is the library's
    one_step = ClientPrivacy(sigma, sample_rate=0.05, steps_per_round=1)
    assert theorem1_epsilon(rounds, sigma, 0.05, None, DELTA) == pytest.approx(
        one_step.spent(rounds, DELTA).epsilon, rel=1e-9
    )
    # tau = 300 noisy steps a round: composing once per round understates the loss
    many = ClientPrivacy(sigma, sample_rate=0.05, steps_per_round=300)
    assert theorem1_epsilon(rounds, sigma, 0.05, None, DELTA) < many.spent(rounds, DELTA).epsilon
    assert theorem1_epsilon(0, sigma, 0.05, scale, DELTA) == 0.0


def test_validations_count_apart_from_training_rounds() -> None:
    client = ClientPrivacy(1.4, sample_rate=0.05, steps_per_round=10, validation_scale=1.0)
    assert client.spent(3, DELTA).epsilon == pytest.approx(
        client.spent(3, DELTA, validations=3).epsilon
    )
    assert client.spent(3, DELTA, validations=0).epsilon < client.spent(3, DELTA).epsilon
    assert client.spent(0, DELTA, validations=2).epsilon > 0  # validating alone costs budget
    with pytest.raises(ValueError):
        ClientPrivacy(1.4, 0.05, 10).spent(1, DELTA, validations=1)  # no scale, no count


# ------------------------------------------------------------------ public data and config
def test_public_data_is_held_out_from_every_client_and_the_test_pool() -> None:
    config = RunConfig.from_run_config(RUN)
    train, test, public = _pool_splits(config)
    assert len(public) and not set(public) & set(train) and not set(public) & set(test)
    for pid in range(4):
        for part in client_indices(config, pid, 4):
            assert not set(part) & set(public)
    assert not set(global_test_indices(config, 4)) & set(public)
    _x, y = public_set(config)
    assert len(y) == len(public) and np.bincount(y).min() > 0  # every class
    # public-fraction = 0 leaves the train pool as it was: everything but the test pool
    plain = RunConfig.from_run_config({"algorithm": "fedavg"})
    labels = np.repeat(np.arange(10), 50)
    train0, test0, public0 = split_pool(labels, plain)
    assert len(public0) == 0 and sorted([*train0, *test0]) == list(range(500))


def test_fedltp_without_public_data_or_with_batchnorm_is_refused(tmp_path) -> None:
    assert RunConfig.from_run_config({"algorithm": "fedltp"}).public_share == 0.1  # auto
    assert RunConfig.from_run_config({"algorithm": "cell"}).public_share == 0.0
    with pytest.raises(ConfigError, match="public-fraction"):
        RunConfig.from_run_config({"algorithm": "fedltp", "public-fraction": 0.0})
    with pytest.raises(ConfigError, match="public-fraction"):
        RunConfig.from_run_config({"algorithm": "fedavg", "public-fraction": -0.5})
    config = RunConfig.from_run_config(RUN | {"model": "mnist-cnn-bn"})
    template = {"bn.running_mean": np.zeros(3, np.float32)}
    from fedticket.store.results import RunDirectory

    with pytest.raises(ConfigError, match="BatchNorm"):
        FedLTP(config, template, RunDirectory(tmp_path, "fedltp", "x"))


def test_hostile_validation_counts_are_refused_or_clamped(tmp_path) -> None:
    specs = FedLTP.evaluate_metrics
    with pytest.raises(InvalidReply):
        check_metrics({"validation-correct": 1e15}, specs, {})
    with pytest.raises(InvalidReply, match="num-train"):
        check_metrics({"validation-size": 500}, specs, {"num-train": 100})
    with pytest.raises(InvalidReply):
        check_metrics({"validation-correct": math.nan}, specs, {})


# ------------------------------------------------------------------ federations
@pytest.fixture(scope="module")
def fedltp_run(tmp_path_factory) -> FedLTP:
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = 1  # FLOWER-NOTES 1
    run_config = RUN | {"output-root": str(tmp_path_factory.mktemp("fedltp"))}
    return run_federation(LoopbackGrid(4, run_config), RunConfig.from_run_config(run_config))


def test_sub_models_nest_and_each_client_keeps_its_own(fedltp_run) -> None:
    strategy = fedltp_run
    shares = retentions(strategy.fedltp)
    for i, masks in enumerate(strategy.submodels):
        for name, mask in masks.items():
            assert int(mask.sum()) == kept_budgets({name: mask.size}, shares[i])[name]
            if i:
                assert not (mask & ~strategy.submodels[i - 1][name]).any(), "not nested"
    assert sorted(list(strategy.assigned.values())[:3]) == [0, 1, 2]  # the first three differ
    for pid, index in strategy.assigned.items():
        assert strategy.masks[pid] is strategy.submodels[index]
    comm = strategy.ledger.to_frame()
    up = comm[(comm["kind"] == "train") & (comm["direction"] == "up")]
    assert (up["payload_bytes"] < up["dense_bytes"] / 2).all()  # sparse uploads


def test_the_global_model_stays_inside_the_largest_sub_model(fedltp_run) -> None:
    strategy = fedltp_run
    for name, mask in strategy.submodels[0].items():
        assert not strategy._global[name][~mask].any()
        assert np.isfinite(strategy._global[name]).all()


def test_privacy_columns_are_the_accountants_figures(fedltp_run) -> None:
    strategy = fedltp_run
    rounds = pd.DataFrame(strategy.round_rows)
    settings = strategy.fedltp
    num_train = max(n.num_train for n in strategy.nodes.values())
    # every client trains and validates every round; the smallest client spends the most
    smallest = min(n.num_train for n in strategy.nodes.values())
    client = ClientPrivacy(
        settings.fedltp_noise,
        15 / smallest,
        settings.fedltp_local_steps,
        settings.fedltp_validation_scale,
    )
    expected = [client.spent(r, DELTA).epsilon for r in (1, 2, 3)]
    assert rounds["privacy_epsilon"].tolist() == pytest.approx(expected)
    assert rounds["privacy_epsilon_theorem1"].tolist() == pytest.approx(
        [theorem1_epsilon(r, 1.4, 15 / smallest, 1.0, DELTA) for r in (1, 2, 3)]
    )
    assert (rounds["privacy_rho"].diff().dropna() > 0).all() and num_train >= smallest
    assert rounds["privacy_most_rounds"].tolist() == [1.0, 2.0, 3.0]
    best = int(rounds["validation_accuracy"].idxmax())
    assert rounds["validated_round"].iloc[-1] == rounds["round"].iloc[best]


def test_the_train_loss_is_not_released(fedltp_run) -> None:
    train = [r for r in fedltp_run.client_rows if r["phase"] == "train" and r["status"] == "ok"]
    assert train and all(math.isnan(r["train_loss"]) for r in train)


def test_the_budget_stop_ends_the_run_before_the_round_that_would_exceed_it(
    tmp_path, flower_task_identity
) -> None:
    config = RunConfig.from_run_config(RUN)
    sizes = [len(client_indices(config, pid, 4)[0]) for pid in range(4)]
    client = ClientPrivacy(1.4, 15 / min(sizes), 4, 1.0)
    budget = client.spent(2, DELTA).epsilon + 1e-9  # two rounds fit, a third does not
    run_config = RUN | {"fedltp-epsilon": budget, "output-root": str(tmp_path)}
    strategy = run_federation(LoopbackGrid(4, run_config), RunConfig.from_run_config(run_config))
    assert [r["round"] for r in strategy.round_rows] == [1, 2]
    assert strategy.stopped.startswith("privacy budget: round 3")
    status = json.loads((strategy.run_dir.path / "status.json").read_text())
    assert status["status"] == "completed" and "privacy budget" in status["reason"]
    assert strategy.round_rows[-1]["privacy_epsilon"] <= budget
    from fedticket.analysis.report import summary
    from fedticket.store.results import load_run

    text = summary(load_run(strategy.run_dir.path), strategy.run_dir.path)
    assert "privacy    epsilon" in text and "stopped    privacy budget: round 3" in text


def test_d_a_budget_below_one_round_stops_before_round_1(tmp_path, flower_task_identity) -> None:
    run_config = RUN | {"fedltp-epsilon": 1e-6, "output-root": str(tmp_path)}
    strategy = run_federation(LoopbackGrid(4, run_config), RunConfig.from_run_config(run_config))
    assert strategy.round_rows == [] and "round 1" in strategy.stopped
    assert not any(r["phase"] == "train" for r in strategy.client_rows)


def test_the_checkpoint_state_round_trips_and_bad_state_is_named(fedltp_run, tmp_path) -> None:
    arrays, meta = fedltp_run.extra_state()
    fresh = FedLTP(fedltp_run.config, fedltp_run.template, fedltp_run.run_dir, fedltp_run.prunable)
    fresh.restore_extra(arrays, meta)
    assert fresh.assigned == fedltp_run.assigned and fresh.book.trained == fedltp_run.book.trained
    assert fresh.best_round == fedltp_run.best_round
    for mine, theirs in zip(fresh.submodels, fedltp_run.submodels, strict=True):
        assert all((mine[n] == theirs[n]).all() for n in theirs)
    with pytest.raises(CheckpointError, match=r"extra\.assigned"):
        fresh.check_extra(arrays, meta | {"assigned": {"0": 99}})
    with pytest.raises(CheckpointError, match=r"extra\.submodels"):
        fresh.check_extra(arrays, meta | {"submodels": 7})
    bad = dict(arrays)
    bad[next(k for k in bad if k.startswith("best/"))] = np.full(1, np.nan, np.float32)
    with pytest.raises(CheckpointError, match="extra/best"):
        fresh.check_extra(bad, meta)


def test_a_wider_upload_is_cut_to_the_clients_sub_model(fedltp_run) -> None:
    from fedticket.strategies.base import ClientUpdate

    strategy = fedltp_run
    node = next(iter(strategy.nodes.values()))
    own = strategy.submodels[strategy.assigned[node.partition_id]]
    ones = {name: np.ones_like(a) for name, a in strategy._global.items()}
    dense = {name: np.ones(m.shape, bool) for name, m in own.items()}
    update = ClientUpdate(node, ones, dense, {"num-examples": 10})
    merged = strategy.aggregate(99, [update], strategy._global)
    assert strategy._projected == 1
    for name, mask in own.items():
        assert (merged[name][mask] == 1).all()
        np.testing.assert_array_equal(merged[name][~mask], strategy._global[name][~mask])
    strategy._projected = 0


def test_the_benchmark_reads_privacy_and_the_validated_round(fedltp_run) -> None:
    from benchmarks.fedltp import summarise, table

    row = summarise("Fed-LTP sigma=1.4", fedltp_run.run_dir.path, 1.0)
    rounds = pd.DataFrame(fedltp_run.round_rows)
    assert row["sigma"] == 1.4 and row["epsilon"] == rounds["privacy_epsilon"].iloc[-1]
    chosen = rounds.loc[rounds["round"] == row["validated_round"], "global_accuracy"]
    assert row["accuracy_validated"] == chosen.iloc[0]
    assert row["mean_density"] < 0.5 and row["mb_up"] < row["mb_total"]
    runs = pd.DataFrame([row, row | {"accuracy_validated": row["accuracy_validated"] + 0.1}])
    assert table(runs)["accuracy_validated"].iloc[0].count("±") == 1


def test_the_book_never_lets_a_client_past_its_budget() -> None:
    from fedticket.strategies.nodes import NodeInfo
    from fedticket.strategies.privacy_book import PrivacyBook

    settings = _settings(**{"fedltp-epsilon": 3.0, "fedltp-local-steps": 20})
    book, node = PrivacyBook(settings, 15), NodeInfo(1, 0, num_train=300, num_test=10)
    sent = 0
    for _attempt in range(100):  # rounds and retries alike
        if book.within(node):
            book.count(node, "train")
            book.count(node, "validate")
            sent += 1
    assert 0 < sent < 100 and book.epsilon(node) <= 3.0 < book.epsilon(node, 1)
    columns = book.columns([node])
    assert columns["privacy_epsilon"] == book.epsilon(node)
    # one round alone costs what the accountant says one round costs
    one = ClientPrivacy(1.4, 15 / 300, 20, 1.0)
    assert columns["privacy_epsilon_round"] == pytest.approx(one.spent(1, DELTA).epsilon)
    assert columns["privacy_rho_round"] == pytest.approx(one.rho(1))
