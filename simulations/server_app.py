"""Flower ServerApp: validate the config, connect the clients, run the strategy, keep results.

Nothing is written before the config is valid and enough clients answered the handshake, so a
bad run-config key or value, or a node without a partition, costs one log line and no files.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from clients import CLIENTS
from fedticket.checkpoint import CheckpointError, load_checkpoint
from fedticket.config import ConfigError, RunConfig
from fedticket.data import DATASETS
from fedticket.masks import select_layers
from fedticket.models import batchnorm_names, build_model, state_arrays
from fedticket.results import RunDirectory, resolve_output_root
from strategies import STRATEGIES
from strategies.base import NoClientsError, SparseStrategy

log = logging.getLogger("flwr")
ALGORITHMS = sorted(set(STRATEGIES) & set(CLIENTS))

app = ServerApp()


def fresh_directory(root: Path, algorithm: str, config_hash: str) -> RunDirectory:
    """``resume=false``: the first of ``<hash>``, ``<hash>-2``, ... that holds no results."""
    suffix, name = 1, config_hash
    while (root / algorithm / name / "config.json").exists():
        suffix += 1
        name = f"{config_hash}-{suffix}"
    return RunDirectory(root, algorithm, name)


def run_federation(
    grid: Grid, config: RunConfig, strategy_cls: type[SparseStrategy] | None = None
) -> SparseStrategy:
    """The whole run on ``grid``: model, strategy, handshake, the algorithm's preparation,
    ``num-rounds`` rounds, results. ``strategy_cls`` replaces the registered strategy (tests
    drive this with an in-process grid). Raises ``NoClientsError`` before writing anything."""
    dataset = DATASETS[config.dataset]
    model = build_model(config.model, dataset.input_shape, dataset.num_classes, seed=config.seed)
    strategy_cls = strategy_cls or STRATEGIES[config.algorithm]
    local = set(batchnorm_names(model)) if strategy_cls.local_batchnorm else set()
    initial = {name: t for name, t in state_arrays(model).items() if name not in local}
    if strategy_cls.local_batchnorm and not local:
        log.warning(
            "fedticket: model '%s' has no BatchNorm, so %s's local batch-norm does nothing; "
            "use a BN model (e.g. --run-config 'model=\"mnist-cnn-bn\"')",
            config.model,
            config.algorithm,
        )
    root, config_hash = resolve_output_root(config.output_root), config.config_hash()
    run_dir = RunDirectory(root, config.algorithm, config_hash)
    checkpoint = run_dir.path / "checkpoint.npz"
    resuming = config.resume and checkpoint.exists()
    if not resuming and not config.resume:
        run_dir = fresh_directory(root, config.algorithm, config_hash)
    strategy = strategy_cls(config, initial, run_dir, select_layers(model, config.sparse_layers))
    if resuming:  # before connecting: a bad checkpoint costs nothing
        arrays, meta = load_checkpoint(checkpoint, config_hash)
    strategy.connect(grid)
    first_round = 1
    if resuming:
        initial = strategy.restore(arrays, meta)
        first_round = int(meta["round"]) + 1
        if first_round > config.num_rounds:
            log.info(
                "fedticket: this config already finished its %d rounds in %s; "
                "--run-config 'resume=false' runs it again in a new directory",
                config.num_rounds,
                run_dir.path,
            )
        log.info(
            "fedticket: resuming %s from its checkpoint after round %d of %d",
            run_dir.path,
            meta["round"],
            config.num_rounds,
        )
    else:
        initial = strategy.prepare(grid, initial)
    run_dir.write_config(config.to_dict())
    strategy.run_rounds(grid, initial, first_round, config.num_rounds)
    strategy.write_results()
    return strategy


def tune_polling(grid: Grid, interval: float = 0.01) -> None:
    """Poll for replies every 10 ms instead of Flower's 100 ms in simulation (the in-memory
    grid's documented ``pull_interval``): every round waits, on average, half an interval
    after its last reply, and a poll of the in-memory state costs microseconds. A deployed
    grid keeps its own pace (it polls the SuperLink over gRPC)."""
    if hasattr(grid, "pull_interval"):
        grid.pull_interval = interval


@app.main()
def main(grid: Grid, context: Context) -> None:
    started = time.perf_counter()
    tune_polling(grid)
    try:
        config = RunConfig.from_run_config(context.run_config, algorithms=ALGORITHMS)
    except ConfigError as exc:
        log.error("fedticket: %s", exc)
        sys.exit(2)
    try:
        strategy = run_federation(grid, config)
    except NoClientsError as exc:
        log.error("fedticket: %s", exc)
        sys.exit(3)
    except CheckpointError as exc:
        log.error("fedticket: %s", exc)
        sys.exit(4)
    last = strategy.round_rows[-1] if strategy.round_rows else {}
    log.info(
        "fedticket: %s finished %d rounds in %.1f s: "
        "global accuracy %.4f, personalised accuracy %.4f",
        config.algorithm,
        len(strategy.round_rows),
        time.perf_counter() - started,
        last.get("global_accuracy", float("nan")),
        last.get("personal_accuracy", float("nan")),
    )
    log.info("fedticket: results in %s", strategy.run_dir.path)
