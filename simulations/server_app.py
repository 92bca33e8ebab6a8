"""Flower ServerApp: validate the config, connect the clients, run the strategy, keep results.

Nothing is written before the config is valid and enough clients answered the handshake, so a
bad run-config key or value, or a node without a partition, costs one log line and no files.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path
from typing import NoReturn

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedticket.clients import CLIENTS
from fedticket.config import ConfigError, RunConfig
from fedticket.learn.data import DataError
from fedticket.learn.eval_protocols import PROTOCOLS
from fedticket.learn.global_evaluator import GlobalEvaluator, build_global_evaluator
from fedticket.learn.models import batchnorm_names, model_for, state_arrays
from fedticket.sparse.masks import select_layers
from fedticket.store.checkpoints import CheckpointError, load_checkpoint
from fedticket.store.environment import describe_environment
from fedticket.store.results import RunDirectory, resolve_output_root
from fedticket.store.tickets import TicketError
from fedticket.store.tracking import TrackingSettings, tracker_for
from fedticket.strategies import STRATEGIES
from fedticket.strategies.base import NoClientsError, SparseStrategy
from fedticket.strategies.reporting import human_bytes

log = logging.getLogger("flwr")
FAILED_LINE = "fedticket: run failed:"
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
    strategy_cls = strategy_cls or STRATEGIES[config.algorithm]
    strategy_cls.check_config(config)
    model = model_for(config)
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
        arrays, meta = load_checkpoint(
            checkpoint,
            config_hash,
            algorithm=strategy.name,
            template=strategy.template,
            check_extra=strategy.check_extra,
        )
    strategy.connect(grid)
    strategy.global_evaluator = global_evaluator(config, strategy)
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
    strategy.tracker = tracker_for(TrackingSettings.of(config), run_dir.path)
    run_dir.write_config(config.to_dict(), describe_environment())
    run_dir.mark_latest()
    run_dir.write_status("running", len(strategy.round_rows))
    try:
        strategy.run_rounds(grid, initial, first_round, config.num_rounds)
    except BaseException as exc:  # a kill (KeyboardInterrupt, SystemExit) is a failure too
        run_dir.write_status("failed", len(strategy.round_rows), failure_reason(exc))
        raise
    finally:
        strategy.tracker.close()
    strategy.write_results()
    run_dir.write_status("completed", len(strategy.round_rows), strategy.stopped)
    return strategy


def failure_reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


def global_evaluator(config: RunConfig, strategy: SparseStrategy) -> GlobalEvaluator | None:
    """The ``global`` protocol's evaluator, or None (with a warning) when the server cannot
    read the data set: its images may live only on the devices."""
    num_partitions = max((node.num_partitions for node in strategy.nodes.values()), default=0)
    try:
        return build_global_evaluator(config, num_partitions)
    except (DataError, OSError) as exc:
        log.warning("fedticket: no global test set on the server (%s); global accuracy is NaN", exc)
        return None


def closing_lines(strategy: SparseStrategy, seconds: float) -> list[str]:
    """What a run ends with: every protocol's last evaluated value and the bytes sent against
    a dense fp32 exchange of the same messages (what FedAvg would have sent)."""
    evaluated = [
        r for r in strategy.round_rows if not math.isnan(r.get("served_accuracy", math.nan))
    ]
    last = evaluated[-1] if evaluated else {}
    scores = " | ".join(
        f"{protocol} {last.get(f'{protocol}_accuracy', math.nan):.4f}" for protocol in PROTOCOLS
    )
    totals = strategy.ledger.totals()
    sent, dense = totals["payload_bytes"], totals["dense_bytes"]
    ratio = dense / sent if sent else math.nan
    stopped = [f"stopped early: {strategy.stopped}"] if strategy.stopped else []
    rounds = len(strategy.round_rows)
    return [
        *stopped,
        f"{strategy.name} finished {rounds} round{'' if rounds == 1 else 's'} in {seconds:.1f} s; "
        f"accuracy at round {last.get('round', 0)}: {scores}",
        f"tensors sent {human_bytes(sent)} where dense fp32 (FedAvg) would send "
        f"{human_bytes(dense)}: {ratio:.2f} x less; {human_bytes(totals['message_bytes'])} "
        "in Flower messages",
        *strategy.closing_lines(),
    ]


def tune_polling(grid: Grid, interval: float = 0.01) -> None:
    """Poll for replies every 10 ms instead of Flower's 100 ms in simulation (the in-memory
    grid's documented ``pull_interval``): every round waits, on average, half an interval
    after its last reply, and a poll of the in-memory state costs microseconds. A deployed
    grid is pulled by ``strategies.deployed_pull.send_and_receive`` instead."""
    if hasattr(grid, "pull_interval"):
        grid.pull_interval = interval


def fail(exc: Exception, code: int) -> NoReturn:
    """Stop the ServerApp with ``exc``'s message. Flower 1.39 lists a ServerApp that exits
    non-zero as completed and ``flwr run`` exits 0, so the line ``FAILED_LINE`` is what tells
    the launcher (and a user's script) that the run failed."""
    log.error("%s %s", FAILED_LINE, exc)
    sys.exit(code)


@app.main()
def main(grid: Grid, context: Context) -> None:
    started = time.perf_counter()
    tune_polling(grid)
    try:
        config = RunConfig.from_run_config(context.run_config, algorithms=ALGORITHMS)
    except ConfigError as exc:
        fail(exc, 2)
    try:
        strategy = run_federation(grid, config)
    except ConfigError as exc:  # a setting the algorithm cannot run with
        fail(exc, 2)
    except NoClientsError as exc:
        fail(exc, 3)
    except (CheckpointError, TicketError) as exc:  # a saved file this run cannot use
        fail(exc, 4)
    except Exception as exc:
        log.error("%s %s", FAILED_LINE, failure_reason(exc))
        raise
    for line in closing_lines(strategy, time.perf_counter() - started):
        log.info("fedticket: %s", line)
    log.info("fedticket: results in %s", strategy.run_dir.path)
