"""Serving Flower messages: one handler per message kind, on the shared client base.

``handle_message`` resolves the run config and the node's partition and data, then a query is
answered with the node's description (``answer_query``); a train or evaluate message has its
header checked (``Instructions``), the client's state loaded, the payload decoded against the
model's template, the algorithm's step run and the reply encoded (``serve_round``).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict

from fedticket.clients.base import CLIENTS, FederatedClient, density
from fedticket.clients.node import (
    broadcast_domain_of,
    compute_slowdown_of,
    data_cache_of,
    link_of,
    partition_of,
    with_node_data_dir,
)
from fedticket.clients.state import ClientState
from fedticket.clients.state_location import snapshots_for
from fedticket.config import RunConfig
from fedticket.learn.data import ClientData, client_data
from fedticket.learn.data.cache import cached_client_data
from fedticket.learn.models import batchnorm_names, model_for, state_arrays
from fedticket.learn.torch_device import DeviceError, resolve_device, set_deterministic
from fedticket.sparse.device_budgets import density_level, device_class
from fedticket.sparse.masks import mask_digest
from fedticket.wire.protocol import (
    ARRAYS,
    CONFIG,
    DEVICE_CLASS,
    DEVICE_ERROR,
    EVALUATION,
    METRICS,
    NODE,
    NUM_PARTITIONS,
    NUM_TEST,
    NUM_TRAIN,
    PARTITION_ID,
    PAYLOAD,
    TORCH_DEVICE,
    Instructions,
    ProtocolError,
)
from fedticket.wire.records import Payload, decode_payload, encode_payload, needs_held_mask

log = logging.getLogger("flwr")


@functools.lru_cache(maxsize=8)
def _config(items: tuple[tuple[str, Any], ...]) -> RunConfig:
    return RunConfig.from_run_config(dict(items), algorithms=CLIENTS)


def resolve_config(run_config: Mapping[str, Any]) -> RunConfig:
    return _config(tuple(sorted(run_config.items())))


def handle_message(kind: str, message: Message, context: Context) -> Message:
    """Serve one Flower message of ``kind`` ("query", "train" or "evaluate")."""
    started = time.perf_counter()
    config = with_node_data_dir(resolve_config(context.run_config), context.node_config)
    if config.client_threads:  # 0: torch's default, which in a Ray actor is its CPU share
        torch.set_num_threads(config.client_threads)
    pid, num_partitions = partition_of(context.node_config)
    cache = data_cache_of(context.node_config)
    if cache is None:
        data = client_data(config, pid, num_partitions)
    else:  # a deployed device: a new process per message, so the data comes from its disk
        data = cached_client_data(cache, config, pid, num_partitions)
    if kind == "query":
        return answer_query(message, context, config, data, num_partitions)
    if kind not in ("train", "evaluate"):
        raise ValueError(f"unknown message kind {kind!r}")
    return serve_round(kind, message, context, config, data, started)


def answer_query(
    message: Message, context: Context, config: RunConfig, data: ClientData, num_partitions: int
) -> Message:
    """The handshake: this node's partition, data sizes, link model and device; a missing
    torch device is reported (the server stops the run with it), not raised."""
    pid = data.partition_id
    try:
        node = {DEVICE_CLASS: device_class(context.node_config), TORCH_DEVICE: ""}
        node |= broadcast_domain_of(context.node_config)
        node[TORCH_DEVICE] = str(resolve_device(config.device))
    except DeviceError as exc:
        node[DEVICE_ERROR] = str(exc)
    metrics = (
        {
            PARTITION_ID: pid,
            NUM_PARTITIONS: num_partitions,
            NUM_TRAIN: len(data.y_train),
            NUM_TEST: len(data.y_test),
        }
        | link_of(context.node_config, config)
        | compute_slowdown_of(context.node_config)
    )
    metrics["density-level"] = density_level(context.node_config, pid)
    return Message(
        RecordDict({METRICS: MetricRecord(metrics), NODE: ConfigRecord(node)}), reply_to=message
    )


def serve_round(
    kind: str,
    message: Message,
    context: Context,
    config: RunConfig,
    data: ClientData,
    started: float,
) -> Message:
    """A train or evaluate message: state in, the algorithm's step, state and reply out."""
    pid = data.partition_id
    header = Instructions.parse(message.content[CONFIG])
    set_deterministic(config.deterministic)
    model = model_for(config).to(resolve_device(config.device))
    snapshots = snapshots_for(context.node_config, header.state_key, pid)
    if snapshots is not None:  # client-state="disk": continue from the last saved state
        snapshots.load_into(
            context.state, header.server_round + (kind == "evaluate"), config.client_state_rebuild
        )
    state = ClientState(context.state, pid)
    client_cls = CLIENTS[config.algorithm]
    if header.evaluate_round is not None and not client_cls.fuses_evaluation:
        raise ProtocolError(
            f"a {config.algorithm} client does not evaluate inside train messages (the header "
            f"asks for round {header.evaluate_round}'s evaluation): it evaluates another model"
        )
    full = state_arrays(model)
    local_names = batchnorm_names(model) if client_cls.local_batchnorm else []
    payload_header = message.content[PAYLOAD]
    if needs_held_mask(payload_header) and state.masks() is None:
        log.warning(
            "fedticket client: partition %s holds no mask in round %s although the server "
            "cached one here: its state was lost (a restarted SuperNode?); this round fails "
            "and the server resends the mask%s",
            pid,
            header.server_round,
            "; BatchNorm restarts from the model's init" if client_cls.local_batchnorm else "",
        )
    payload = decode_payload(
        message.content[ARRAYS],
        payload_header,
        {name: t for name, t in full.items() if name not in local_names},
        held_masks=state.masks(),
    )
    if payload.masks_sent:
        state.save_masks(payload.masks)
    local = (
        (state.arrays("local") or {name: full[name] for name in local_names}) if local_names else {}
    )
    tensors = {name: local[name] if name in local else payload.tensors[name] for name in full}
    client = client_cls(config, data, state, model, header.stage)
    content = RecordDict()
    if kind == "train" and header.evaluate_round is not None:
        # evaluate-with-train: the earlier round's evaluation of this same model, first
        evaluated = time.perf_counter()
        evaluation = client.evaluate(header.evaluate_round, tensors, payload.masks)
        evaluation["client-seconds"] = time.perf_counter() - evaluated
        content[EVALUATION] = metric_record(pid, evaluation)
        started += evaluation["client-seconds"]  # the train row's client-seconds: training only
    if kind == "train":
        metrics = _train(client, header.server_round, tensors, payload, local_names, content)
    else:
        metrics = client.evaluate(header.server_round, tensors, payload.masks)
    if snapshots is not None:
        # keep what a resume from the server's last checkpoint needs (no checkpoints named:
        # the previous round's snapshot and this one)
        keep_from = header.checkpoint_round
        snapshots.save(
            context.state,
            header.server_round,
            header.server_round - 1 if keep_from is None else keep_from,
        )
    # the whole handler (data, decode, algorithm step, encode, state): what the client costs,
    # next to ``train-seconds``, the part spent in SGD
    metrics["client-seconds"] = time.perf_counter() - started
    content[METRICS] = metric_record(pid, metrics)
    return Message(content, reply_to=message)


def metric_record(pid: int, metrics: Mapping[str, Any]) -> MetricRecord:
    """A reply's metrics, numbers as floats (lists of counts stay lists), with its partition."""
    return MetricRecord(
        {PARTITION_ID: pid}
        | {k: (v if isinstance(v, list) else float(v)) for k, v in metrics.items()}
    )


def _train(
    client: FederatedClient,
    server_round: int,
    tensors: dict[str, np.ndarray],
    payload: Payload,
    local_names: list[str],
    content: RecordDict,
) -> dict[str, Any]:
    """The algorithm's fit; the reply's tensors go into ``content`` (personal BatchNorm stays
    in the client's state, never sent)."""
    state, config = client.state, client.config
    arrays, masks, metrics = client.fit(server_round, tensors, payload.masks)
    changed = mask_digest(masks) != payload.digest
    if changed:
        state.save_masks(masks)
    if arrays is not None:
        client.after_fit(server_round, arrays)
    if arrays is not None and local_names:
        state.save_arrays("local", {name: arrays[name] for name in local_names})
        arrays = {name: t for name, t in arrays.items() if name not in local_names}
    if arrays is not None:  # None: the step replies with metrics only (FLASH stage 1)
        content[ARRAYS], content[PAYLOAD] = encode_payload(
            arrays,
            masks,
            send_masks=changed,
            value_dtype=config.value_dtype,
            compression=config.value_compression,
        )
    return {"density": density(masks)} | metrics
