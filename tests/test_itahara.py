"""Itahara et al.: the ticket's counts in closed form (docs/algorithms/itahara.md section 5), the
autoencoder's pre-training, the saved ticket and its checks, and federations on the loopback grid
(payloads under the ticket's mask, a second run from the saved ticket)."""

from __future__ import annotations

import zipfile

import numpy as np
import pandas as pd
import pytest

from fedticket.algorithms.itahara import TICKET_FILE
from fedticket.config import ConfigError, RunConfig
from fedticket.learn.dae_ticket import Ticket, head_of, make_ticket, pretrain_autoencoder
from fedticket.learn.data import client_indices, public_set
from fedticket.learn.data.holdout import _pool_splits
from fedticket.learn.models import model_for, state_arrays
from fedticket.simulations.server_app import run_federation
from fedticket.sparse.masks import prunable_names
from fedticket.store.checkpoints import write_archive
from fedticket.store.tickets import TicketError, load_ticket, save_ticket
from tests.loopback import LoopbackGrid

RUN = {
    "algorithm": "itahara",
    "num-rounds": 2,
    "min-train-clients": 3,
    "min-evaluate-clients": 3,
    "min-available-clients": 3,
    "partitioner": "iid",
    "itahara-epochs": 1,
    "client-state": "memory",
}
#: mnist-cnn's weights at density 0.3: round(0.3 x size) per layer
COUNTS = {"conv1.weight": 75, "conv2.weight": 1500, "fc1.weight": 4800, "fc2.weight": 150}


def _config(**keys) -> RunConfig:
    return RunConfig.from_run_config(RUN | keys)


@pytest.mark.parametrize("source", ["dae", "magnitude", "random"])
def test_a_every_ticket_keeps_the_same_closed_form_counts(source) -> None:
    config = _config()
    model = model_for(config)
    names = prunable_names(model)
    unlabeled = public_set(config)[0][:64]
    ticket = make_ticket(config, names, source, 0.3, unlabeled=unlabeled, epochs=1)
    assert {n: int(m.sum()) for n, m in ticket.mask.items()} == COUNTS
    assert sum(COUNTS.values()) / sum(m.size for m in ticket.mask.values()) == 0.3
    for name, mask in ticket.mask.items():
        assert not ticket.weights[name][~mask].any()


def test_the_magnitude_ticket_is_the_top_k_of_the_init() -> None:
    config = _config()
    init = state_arrays(model_for(config))
    names = list(COUNTS)
    ticket = make_ticket(config, names, "magnitude", 0.3)
    for name in names:
        kept, dropped = (
            np.abs(init[name][ticket.mask[name]]),
            np.abs(init[name][~ticket.mask[name]]),
        )
        assert kept.min() >= dropped.max()
        np.testing.assert_array_equal(
            ticket.weights[name][ticket.mask[name]], init[name][ticket.mask[name]]
        )


def test_the_autoencoder_learns_and_leaves_the_head_at_its_init() -> None:
    config = _config()
    model = model_for(config)
    before = state_arrays(model)
    x = public_set(config)[0]
    losses = pretrain_autoencoder(
        model, x, corruption=0.5, epochs=3, batch_size=32, lr=1e-3, seed=1
    )
    assert losses[-1] < 0.9 * losses[0]
    after = state_arrays(model)
    head = head_of(model)
    assert head is model.fc2
    np.testing.assert_array_equal(after["fc2.weight"], before["fc2.weight"])
    assert not np.array_equal(after["conv1.weight"], before["conv1.weight"])


def test_rewound_survivors_are_the_init() -> None:
    config = _config()
    init = state_arrays(model_for(config))
    unlabeled = public_set(config)[0][:64]
    ticket = make_ticket(
        config, list(COUNTS), "dae", 0.3, unlabeled=unlabeled, weights="rewind", epochs=1
    )
    for name, mask in ticket.mask.items():
        np.testing.assert_array_equal(ticket.weights[name][mask], init[name][mask])


def test_the_unlabeled_data_is_no_clients() -> None:
    config = _config()
    _train, test, public = _pool_splits(config)
    assert len(public) and not set(public) & set(test)
    for pid in range(3):
        for part in client_indices(config, pid, 3):
            assert not set(part) & set(public)
    with pytest.raises(ConfigError, match="unlabeled"):
        _config(**{"public-fraction": 0.0})
    _config(**{"public-fraction": 0.0, "itahara-ticket": "random"})  # baselines need none


# ------------------------------------------------------------------ the saved ticket
def _saved(tmp_path) -> tuple[Ticket, dict, list[str]]:
    config = _config()
    template = state_arrays(model_for(config))
    names = list(COUNTS)
    ticket = make_ticket(config, names, "magnitude", 0.3)
    save_ticket(tmp_path / TICKET_FILE, ticket, {"model": "mnist-cnn"})
    return ticket, template, names


def test_a_saved_ticket_reads_back_exactly(tmp_path) -> None:
    ticket, template, names = _saved(tmp_path)
    again, record = load_ticket(tmp_path / TICKET_FILE, template, names, "mnist-cnn")
    assert record["source"] == "magnitude" and again.source == "magnitude"
    for name in template:
        np.testing.assert_array_equal(again.weights[name], ticket.weights[name])
    for name in names:
        np.testing.assert_array_equal(again.mask[name], ticket.mask[name])


def _write(path, weights, masks, meta) -> None:
    arrays = {f"weights/{k}": v for k, v in weights.items()}
    arrays |= {f"mask/{k}": v for k, v in masks.items()}
    write_archive(path, arrays, meta)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("model", "is for model"),
        ("nan", "not finite"),
        ("outside", "outside its mask"),
        ("mask-values", "not a 0/1 mask"),
        ("shape", "the model's"),
        ("missing", "weights lack"),
    ],
)
def test_a_bad_ticket_file_is_one_clear_error(tmp_path, damage, message) -> None:
    ticket, template, names = _saved(tmp_path)
    weights = {k: v.copy() for k, v in ticket.weights.items()}
    masks = {k: v.astype(np.uint8) for k, v in ticket.mask.items()}
    meta = {"model": "mnist-cnn"}
    if damage == "model":
        meta = {"model": "lenet5"}
    elif damage == "nan":
        weights["fc1.bias"][0] = np.nan
    elif damage == "outside":
        weights["fc1.weight"][~ticket.mask["fc1.weight"]] = 1.0
    elif damage == "mask-values":
        masks["fc1.weight"][0, 0] = 7
    elif damage == "shape":
        weights["fc1.bias"] = np.zeros(3, np.float32)
    elif damage == "missing":
        del weights["fc1.bias"]
    _write(tmp_path / "bad.npz", weights, masks, meta)
    with pytest.raises(TicketError, match=message):
        load_ticket(tmp_path / "bad.npz", template, names, "mnist-cnn")


def test_a_ticket_that_declares_too_much_or_is_no_archive_is_refused(tmp_path) -> None:
    _ticket, template, names = _saved(tmp_path)
    huge = tmp_path / "huge.npz"
    with zipfile.ZipFile(huge, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("weights/fc1.weight.npy", b"\0" * (20 << 20))  # compresses to little
    assert huge.stat().st_size < 1 << 20
    with pytest.raises(TicketError, match="declares"):
        load_ticket(huge, template, names, "mnist-cnn")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(TicketError, match="cannot be read"):
        load_ticket(tmp_path / "text.npz", template, names, "mnist-cnn")


# ------------------------------------------------------------------ federations
def test_payloads_follow_the_ticket_and_a_second_run_reuses_it(
    tmp_path, flower_task_identity
) -> None:
    first_config = RUN | {"output-root": str(tmp_path / "a")}
    first = run_federation(LoopbackGrid(3, first_config), RunConfig.from_run_config(first_config))
    saved = first.run_dir.path / TICKET_FILE
    assert saved.exists()
    for name, mask in first.ticket_mask.items():
        assert int(mask.sum()) == COUNTS[name]
        assert not first._global[name][~mask].any()  # the model never leaves the ticket
    comm = first.ledger.to_frame()
    up = comm[(comm["kind"] == "train") & (comm["direction"] == "up")]
    assert len(up) == 6 and (up["payload_bytes"] < up["dense_bytes"] / 2).all()
    assert (up["position_bytes"] == 0).all()  # replies refer to the mask the client holds
    rounds = first.round_rows
    assert all(r["projected_replies"] == 0 for r in rounds)
    # a second run, another seed, starts from the first run's ticket instead of pre-training
    second_config = RUN | {
        "output-root": str(tmp_path / "b"),
        "seed": 7,
        "itahara-ticket-from": str(saved),
    }
    second = run_federation(
        LoopbackGrid(3, second_config), RunConfig.from_run_config(second_config)
    )
    for name, mask in first.ticket_mask.items():
        np.testing.assert_array_equal(second.ticket_mask[name], mask)
    reread, record = load_ticket(
        second.run_dir.path / TICKET_FILE, first.template, first.prunable, "mnist-cnn"
    )
    original, _ = load_ticket(saved, first.template, first.prunable, "mnist-cnn")
    for name in first.template:
        np.testing.assert_array_equal(reread.weights[name], original.weights[name])
    assert record["source"] == "dae"


def test_the_benchmark_models_compute_from_the_kept_weights(tmp_path, flower_task_identity) -> None:
    from benchmarks.itahara import cost_table, macs_per_sample, output_positions, summarise

    model = model_for(_config())
    assert output_positions(model, (1, 28, 28)) == {
        "conv1.weight": 576,  # 24 x 24 outputs per channel
        "conv2.weight": 64,  # 8 x 8
        "fc1.weight": 1,
        "fc2.weight": 1,
    }
    run_config = RUN | {"output-root": str(tmp_path), "itahara-ticket": "random"}
    strategy = run_federation(LoopbackGrid(3, run_config), RunConfig.from_run_config(run_config))
    run_dir = strategy.run_dir.path
    kept = 75 * 576 + 1500 * 64 + 4800 + 150  # COUNTS x positions
    assert macs_per_sample(run_dir) == 3 * kept
    row = summarise("random ticket", run_dir, 1.0)
    table = cost_table(pd.DataFrame([row]), target=0.0)  # round 1 reaches it
    assert table["rounds_to_target"].iloc[0].startswith("1.00")
    train = [r for r in strategy.client_rows if r["phase"] == "train" and r["round"] == 1]
    samples = sum(r["num_examples"] for r in train)  # one local epoch
    gmac = float(table["GMAC_to_target"].iloc[0])
    assert gmac == pytest.approx(round(samples * 3 * kept / 1e9, 2))


def test_a_bad_ticket_file_stops_the_run_before_anything_is_written(
    tmp_path, flower_task_identity
) -> None:
    (tmp_path / "bad.npz").write_text("not a ticket")
    run_config = RUN | {
        "output-root": str(tmp_path / "runs"),
        "itahara-ticket-from": str(tmp_path / "bad.npz"),
    }
    with pytest.raises(TicketError, match="cannot be read"):
        run_federation(LoopbackGrid(3, run_config), RunConfig.from_run_config(run_config))
    assert not list((tmp_path / "runs").rglob("config.json"))
