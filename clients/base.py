"""The client base: decode payload -> load client state -> algorithm step -> encode reply.

``handle_message`` is the whole Flower-facing half of a client: it resolves the run config and
the node's partition, loads the client's data and state, decodes the payload against the model's
template, calls the algorithm's ``fit`` / ``evaluate`` and encodes the reply. An algorithm
subclasses ``FederatedClient`` and writes only its steps.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from torch import nn

from clients.state_location import snapshots_for
from fedticket.accelerator import DeviceError, resolve_device, set_deterministic
from fedticket.config import RunConfig
from fedticket.data import DATASETS, ClientData, client_data
from fedticket.devices import density_level, device_class
from fedticket.flower_io import decode_payload, encode_payload, record_to_state, state_to_record
from fedticket.masks import kept_share as density
from fedticket.masks import mask_digest
from fedticket.models import batchnorm_names, build_model, load_state_arrays, state_arrays
from fedticket.protocols import reference_sample, running_best
from fedticket.train import EvalStats
from fedticket.train import evaluate as evaluate_model

log = logging.getLogger("flwr")
CLIENTS: dict[str, type[FederatedClient]] = {}
Masks = dict[str, np.ndarray]


class NodeConfigError(ValueError):
    """The node was started without the node config a fedticket client needs."""


def register_client(name: str) -> Callable[[type[FederatedClient]], type[FederatedClient]]:
    def wrap(cls: type[FederatedClient]) -> type[FederatedClient]:
        cls.name = name
        CLIENTS[name] = cls
        return cls

    return wrap


def partition_of(node_config: Mapping[str, Any]) -> tuple[int, int]:
    """(partition id, number of partitions) from the node config.

    Simulation sets both; a deployed SuperNode has them only when started with
    ``--node-config "partition-id=K num-partitions=N"``."""
    fix = 'start the SuperNode with --node-config "partition-id=K num-partitions=N" (0 <= K < N)'
    if "partition-id" not in node_config or "num-partitions" not in node_config:
        raise NodeConfigError(f"node config lacks partition-id / num-partitions; {fix}")
    pid, n = node_config["partition-id"], node_config["num-partitions"]
    if (
        not isinstance(pid, int)
        or not isinstance(n, int)
        or isinstance(pid, bool)
        or not 0 <= pid < n
    ):
        raise NodeConfigError(
            f"node config partition-id={pid!r} num-partitions={n!r} is invalid; {fix}"
        )
    return pid, n


def link_of(node_config: Mapping[str, Any], config: RunConfig) -> dict[str, float]:
    """The node's link model: node config keys override the run config's (a Pi on Wi-Fi and
    a Jetson on Ethernet in one federation)."""
    link = {}
    for key in ("link-up-mbps", "link-down-mbps", "link-latency-ms"):
        value = node_config.get(key, getattr(config, key.replace("-", "_")))
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise NodeConfigError(f"node config {key}={value!r} must be a number >= 0")
        link[key] = float(value)
    return link


class ClientState:
    """This client's slice of ``context.state``, keyed by partition id (node ids change
    every simulation run; partition ids do not)."""

    def __init__(self, state: RecordDict, partition_id: int) -> None:
        self._state = state
        self._prefix = f"fedticket.{partition_id}"

    def counters(self, name: str = "counters") -> dict[str, int | float | str]:
        """A record of scalars (``counters``: the algorithm's; ``protocols``: the base's
        evaluation bookkeeping)."""
        record = self._state.get(f"{self._prefix}.{name}")
        return dict(record) if record is not None else {}

    def save_counters(
        self, counters: Mapping[str, int | float | str], name: str = "counters"
    ) -> None:
        self._state[f"{self._prefix}.{name}"] = ConfigRecord(dict(counters))

    def arrays(self, name: str) -> dict[str, np.ndarray] | None:
        record = self._state.get(f"{self._prefix}.{name}")
        return record_to_state(record) if record is not None else None

    def save_arrays(self, name: str, tensors: Mapping[str, np.ndarray] | None) -> None:
        key = f"{self._prefix}.{name}"
        if tensors is None:
            self._state.pop(key, None)
        else:
            self._state[key] = state_to_record(tensors)

    def masks(self) -> Masks | None:
        """The mask this client holds (what the server may leave out of its messages)."""
        return self.arrays("mask")

    def save_masks(self, masks: Masks | None) -> None:
        self.save_arrays("mask", masks)


class FederatedClient:
    """One client's algorithm steps. ``model`` holds the architecture; tensors come in and go
    out as name -> numpy dicts, masks as name -> bool arrays (None = dense). ``instructions``
    is the message's config record (server round, algorithm stage, ...)."""

    name: ClassVar[str] = ""
    #: True: BatchNorm tensors are personal client state, never sent (FedLTN's local BN). The
    #: algorithm's strategy must say the same (``SparseStrategy.local_batchnorm``).
    local_batchnorm: ClassVar[bool] = False

    def __init__(
        self,
        config: RunConfig,
        data: ClientData,
        state: ClientState,
        model: nn.Module,
        instructions: Mapping[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.data = data
        self.state = state
        self.model = model
        self.instructions = dict(instructions or {})

    def seed_for(self, server_round: int, purpose: int = 0) -> int:
        """A training seed unique to (run seed, round, partition): runs repeat exactly."""
        seq = np.random.SeedSequence(
            [self.config.seed, server_round, self.data.partition_id, purpose]
        )
        return int(seq.generate_state(1, dtype=np.uint32)[0])

    def lr_for(self, server_round: int) -> float:
        """``lr`` in round 1, decayed geometrically to ``lr-end`` in the last round (FLASH's
        0.1 -> 0.001 schedule over the run's rounds; the reference code divides by 1000
        rounds whatever the run's length, bug 3)."""
        config = self.config
        if config.lr_end <= 0 or config.num_rounds <= 1:
            return config.lr
        progress = (min(server_round, config.num_rounds) - 1) / (config.num_rounds - 1)
        return config.lr * (config.lr_end / config.lr) ** progress

    def fit(
        self, server_round: int, arrays: dict[str, np.ndarray], masks: Masks | None
    ) -> tuple[dict[str, np.ndarray], Masks | None, dict[str, float]]:
        """Train on the received tensors; return the reply tensors, the mask they are kept
        under (the received one unless the algorithm changed it) and metrics."""
        raise NotImplementedError

    # ------------------------------------------------------------------ evaluation protocols
    def evaluate(
        self, server_round: int, arrays: dict[str, np.ndarray], masks: Masks | None
    ) -> dict[str, float]:
        """The client-side protocols (``fedticket.protocols``): the served model and the
        client's own latest trained model on its whole local test set, and the reference
        best-ever score updated with the served model on a random 80-image sample."""
        served = self.score(arrays)
        metrics = {
            "num-examples": served.num_examples,
            "served-loss": served.loss,
            "served-accuracy": served.accuracy,
        }
        book = self.state.counters("protocols")
        trained = self.state.arrays("trained")
        if trained is not None:
            local = self.score(trained)
            age = server_round - int(book.get("trained-round", server_round))
        else:
            local, age = EvalStats(math.nan, math.nan, 0), math.nan
        metrics |= {"local-loss": local.loss, "local-accuracy": local.accuracy, "local-age": age}
        metrics["reference-accuracy"] = self.update_reference(server_round, arrays, purpose=1)
        return metrics | {"density": density(masks)}

    def after_fit(self, server_round: int, arrays: dict[str, np.ndarray]) -> None:
        """Keep the trained model (the ``local`` protocol) and score it for the reference
        protocol's best-ever, as LotteryFL's code scores every post-training model (R6)."""
        self.state.save_arrays("trained", arrays)
        book = self.state.counters("protocols") | {"trained-round": server_round}
        self.state.save_counters(book, "protocols")
        self.update_reference(server_round, arrays, purpose=2)

    def score(self, arrays: Mapping[str, np.ndarray], pick: np.ndarray | None = None) -> EvalStats:
        """``arrays`` on the local test set (only the ``pick`` indices when given)."""
        load_state_arrays(self.model, arrays)
        x, y = self.data.x_test, self.data.y_test
        if pick is not None:
            x, y = x[pick], y[pick]
        return evaluate_model(self.model, x, y, batch_size=self.config.eval_batch_size)

    def update_reference(
        self, server_round: int, arrays: Mapping[str, np.ndarray], purpose: int
    ) -> float:
        """Score ``arrays`` on a fresh random ``REFERENCE_IMAGES`` sample of the local test set
        and return the running best-ever (kept in the ``protocols`` record)."""
        seed = self.seed_for(server_round, 0x5EF0 + purpose)
        stats = self.score(arrays, reference_sample(len(self.data.y_test), seed))
        book = self.state.counters("protocols")
        best = running_best(float(book.get("reference-best", math.nan)), stats.accuracy)
        self.state.save_counters(book | {"reference-best": best}, "protocols")
        return best


@functools.lru_cache(maxsize=8)
def _config(items: tuple[tuple[str, Any], ...]) -> RunConfig:
    return RunConfig.from_run_config(dict(items), algorithms=CLIENTS)


def resolve_config(run_config: Mapping[str, Any]) -> RunConfig:
    return _config(tuple(sorted(run_config.items())))


def _model_for(config: RunConfig) -> nn.Module:
    spec = DATASETS[config.dataset]
    return build_model(config.model, spec.input_shape, spec.num_classes, seed=config.seed)


def with_node_data_dir(config: RunConfig, node_config: Mapping[str, Any]) -> RunConfig:
    """A device's ``--node-config "data-dir=..."`` overrides the run config's: each device
    keeps its dataset files where it likes."""
    data_dir = node_config.get("data-dir")
    if data_dir is None:
        return config
    if not isinstance(data_dir, str) or not data_dir:
        raise NodeConfigError(f"node config data-dir={data_dir!r} must be a non-empty path")
    return dataclasses.replace(config, data_dir=data_dir)


def handle_message(kind: str, message: Message, context: Context) -> Message:
    """Serve one Flower message of ``kind`` ("query", "train" or "evaluate")."""
    started = time.perf_counter()
    config = with_node_data_dir(resolve_config(context.run_config), context.node_config)
    if config.client_threads:  # 0: torch's default, which in a Ray actor is its CPU share
        torch.set_num_threads(config.client_threads)
    pid, num_partitions = partition_of(context.node_config)
    data = client_data(config, pid, num_partitions)
    if kind == "query":
        try:
            node = {"device-class": device_class(context.node_config), "torch-device": ""}
            node["torch-device"] = str(resolve_device(config.device))
        except DeviceError as exc:  # a config problem: the server stops the run with this line
            node["device-error"] = str(exc)
        metrics = {
            "partition-id": pid,
            "num-partitions": num_partitions,
            "num-train": len(data.y_train),
            "num-test": len(data.y_test),
        } | link_of(context.node_config, config)
        metrics["density-level"] = density_level(context.node_config, pid)
        return Message(
            RecordDict({"metrics": MetricRecord(metrics), "node": ConfigRecord(node)}),
            reply_to=message,
        )

    set_deterministic(config.deterministic)
    model = _model_for(config).to(resolve_device(config.device))
    header = dict(message.content["config"])
    server_round = int(header["server-round"])
    snapshots = snapshots_for(context.node_config, header, pid)
    if snapshots is not None:  # client-state="disk": continue from the last saved state
        snapshots.load_into(
            context.state, server_round + (kind == "evaluate"), config.client_state_rebuild
        )
    state = ClientState(context.state, pid)
    client_cls = CLIENTS[config.algorithm]
    full = state_arrays(model)
    local_names = batchnorm_names(model) if client_cls.local_batchnorm else []
    payload_header = message.content["payload"]
    if (
        not payload_header.get("masks-sent", True)
        and payload_header.get("masked")
        and state.masks() is None
    ):
        log.warning(
            "fedticket client: partition %s holds no mask in round %s although the server "
            "cached one here: its state was lost (a restarted SuperNode?); this round fails "
            "and the server resends the mask%s",
            pid,
            server_round,
            "; BatchNorm restarts from the model's init" if client_cls.local_batchnorm else "",
        )
    payload = decode_payload(
        message.content["arrays"],
        message.content["payload"],
        {name: t for name, t in full.items() if name not in local_names},
        held_masks=state.masks(),
    )
    if payload.masks_sent:
        state.save_masks(payload.masks)
    local = (
        (state.arrays("local") or {name: full[name] for name in local_names}) if local_names else {}
    )
    tensors = {name: local[name] if name in local else payload.tensors[name] for name in full}
    instructions = dict(message.content["config"])
    client = client_cls(config, data, state, model, instructions)
    content = RecordDict()
    if kind == "train":
        arrays, masks, metrics = client.fit(server_round, tensors, payload.masks)
        changed = mask_digest(masks) != payload.digest
        if changed:
            state.save_masks(masks)
        if arrays is not None:
            client.after_fit(server_round, arrays)
        if arrays is not None and local_names:  # personal BN stays here, never sent
            state.save_arrays("local", {name: arrays[name] for name in local_names})
            arrays = {name: t for name, t in arrays.items() if name not in local_names}
        if arrays is not None:  # None: the step replies with metrics only (FLASH stage 1)
            content["arrays"], content["payload"] = encode_payload(
                arrays,
                masks,
                send_masks=changed,
                value_dtype=config.value_dtype,
                compression=config.value_compression,
            )
        metrics = {"density": density(masks)} | metrics
    elif kind == "evaluate":
        metrics = client.evaluate(server_round, tensors, payload.masks)
    else:
        raise ValueError(f"unknown message kind {kind!r}")
    if snapshots is not None:
        # keep what a resume from the server's last checkpoint needs (no checkpoints named:
        # the previous round's snapshot and this one)
        keep_from = int(header.get("checkpoint-round", server_round - 1))
        snapshots.save(context.state, server_round, keep_from)
    # the whole handler (data, decode, algorithm step, encode, state): what the client costs,
    # next to ``train-seconds``, the part spent in SGD
    metrics["client-seconds"] = time.perf_counter() - started
    content["metrics"] = MetricRecord(
        {"partition-id": pid}
        | {k: (v if isinstance(v, list) else float(v)) for k, v in metrics.items()}
    )
    return Message(content, reply_to=message)
