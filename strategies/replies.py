"""The one gate every client reply passes before the server records or aggregates anything.

A reply comes from a device the server does not control: a flaky Raspberry Pi, a buggy
client build, or a hostile peer. ``check_reply`` turns it into a ``CheckedReply`` (typed
metrics, the decoded payload, the node's description) or raises ``InvalidReply`` with a
reason a person can act on; the strategy then records a failure row for that client and
leaves it out of the round. Nothing a reply holds reaches a table, an aggregate or a mask
before it has passed here:

* record names and types (an ``arrays`` entry that is a ``ConfigRecord``, an extra record);
* metrics: every metric the server reads is finite (NaN only where a metric means "not yet"),
  integral where it counts something, in range (accuracy in [0, 1], a non-negative loss),
  ``num-examples`` at most what the node declared in its handshake, ``partition-id`` the
  handshake's;
* the payload: ``fedticket.wire.records.decode_payload`` checks structure, shapes, masks against
  the header's digest; here every decoded value must also be finite (one NaN weight would
  make the global model NaN).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fedticket.wire.protocol import (
    EVALUATION,
    NODE_FIELDS,
    NUM_EXAMPLES,
    NUM_PARTITIONS,
    NUM_TEST,
    NUM_TRAIN,
    PARTITION_ID,
)
from fedticket.wire.records import Payload, PayloadError, decode_payload

#: the largest sample count a node may declare (int32): a count beyond it is a lie or a bug,
#: and a weighted mean over counts that large would be dominated by one client
MAX_EXAMPLES = 2**31 - 1
#: most metrics one reply may hold (the algorithms here send at most a dozen)
MAX_METRICS = 64
#: longest text a node may put in its description (device class, torch device, errors)
MAX_TEXT = 300


class InvalidReply(ValueError):
    """A reply the server cannot use; ``status`` goes to the failure row with the message."""

    def __init__(self, reason: str, status: str = "invalid") -> None:
        super().__init__(reason)
        self.status = status


def malformed(reason: str) -> InvalidReply:
    return InvalidReply(reason, "malformed")


@dataclass(frozen=True)
class MetricSpec:
    """What one reply metric may hold. ``bound`` names a handshake count the value may not
    exceed (``num-train``, ``num-test``); ``items`` > 0: a list of at most that many ints."""

    low: float = -math.inf
    high: float = math.inf
    integer: bool = False
    nan_ok: bool = False
    required: bool = False
    bound: str = ""
    items: int = 0


COUNT = MetricSpec(low=0, high=MAX_EXAMPLES, integer=True)
SECONDS = MetricSpec(low=0)
SHARE = MetricSpec(low=0, high=1)
REQUIRED_COUNT = MetricSpec(low=0, high=MAX_EXAMPLES, integer=True, required=True)

QUERY_METRICS: dict[str, MetricSpec] = {
    PARTITION_ID: REQUIRED_COUNT,
    NUM_PARTITIONS: MetricSpec(low=1, high=MAX_EXAMPLES, integer=True, required=True),
    NUM_TRAIN: REQUIRED_COUNT,
    NUM_TEST: REQUIRED_COUNT,
    "link-up-mbps": MetricSpec(low=0, high=1e6),
    "link-down-mbps": MetricSpec(low=0, high=1e6),
    "link-latency-ms": MetricSpec(low=0, high=1e6),
    "density-level": MetricSpec(low=0, high=1),
    "compute-slowdown": MetricSpec(low=1e-3, high=1e4),
}
TRAIN_METRICS: dict[str, MetricSpec] = {
    PARTITION_ID: REQUIRED_COUNT,
    NUM_EXAMPLES: dataclasses.replace(REQUIRED_COUNT, bound=NUM_TRAIN),
    "train-loss": MetricSpec(low=0, required=True),
    "train-seconds": SECONDS,
    "client-seconds": SECONDS,
    "density": SHARE,
}
EVALUATE_METRICS: dict[str, MetricSpec] = {
    PARTITION_ID: REQUIRED_COUNT,
    NUM_EXAMPLES: dataclasses.replace(REQUIRED_COUNT, bound=NUM_TEST),
    "served-loss": MetricSpec(low=0, required=True),
    "served-accuracy": MetricSpec(low=0, high=1, required=True),
    # NaN: the client has not trained yet (no local model), or has no score yet
    "local-loss": MetricSpec(low=0, nan_ok=True),
    "local-accuracy": MetricSpec(low=0, high=1, nan_ok=True),
    "local-age": MetricSpec(low=0, integer=True, nan_ok=True),
    "reference-accuracy": MetricSpec(low=0, high=1, nan_ok=True),
    "density": SHARE,
    "client-seconds": SECONDS,
}
#: the records each kind of reply may hold, and their types
RECORDS: dict[str, dict[str, type]] = {
    "query": {"metrics": MetricRecord, "node": ConfigRecord},
    "train": {
        "metrics": MetricRecord,
        "arrays": ArrayRecord,
        "payload": ConfigRecord,
        EVALUATION: MetricRecord,
    },
    "evaluate": {"metrics": MetricRecord},
}


@dataclass(frozen=True)
class CheckedReply:
    """A reply that passed every check: what the strategy may use of it. A train reply that
    was asked for an earlier round's evaluation (``evaluate-with-train``) carries it checked
    in ``evaluation``, or the reason it is unusable in ``evaluation_fault`` (the training
    update stays usable either way)."""

    metrics: dict[str, float | list[int]]
    payload: Payload | None = None
    node: dict[str, str] | None = None
    evaluation: dict[str, float | list[int]] | None = None
    evaluation_fault: InvalidReply | None = None


@dataclass(frozen=True)
class Expected:
    """What the server knows when a reply arrives: the handshake's counts for the node (None
    for a handshake reply), the model template, the masks the node holds, and the metrics
    the algorithm adds to the base ones. ``evaluation_metrics`` (a train message that asked
    for an earlier round's evaluation): the algorithm's extra evaluate metrics."""

    kind: str
    handshake: Mapping[str, int] | None = None
    template: Mapping[str, np.ndarray] | None = None
    held_masks: Mapping[str, np.ndarray] | None = None
    extra_metrics: Mapping[str, MetricSpec] | None = None
    evaluation_metrics: Mapping[str, MetricSpec] | None = None


def check_reply(reply: Message, expected: Expected) -> CheckedReply:
    """The reply's usable content, or ``InvalidReply`` naming the first fault found."""
    kind = expected.kind
    content = reply.content
    allowed = RECORDS[kind]
    unexpected = sorted(set(content.keys()) - set(allowed))
    if unexpected:
        raise malformed(f"{kind} reply holds unexpected records {unexpected}")
    for name, record_type in allowed.items():
        if name in content and not isinstance(content[name], record_type):
            got = type(content[name]).__name__
            raise malformed(f"{kind} reply: '{name}' is a {got}, expected {record_type.__name__}")
    if "metrics" not in content:
        raise malformed(f"{kind} reply has no 'metrics' record")
    base = {"query": QUERY_METRICS, "train": TRAIN_METRICS, "evaluate": EVALUATE_METRICS}[kind]
    specs = base | dict(expected.extra_metrics or {})
    metrics = check_metrics(dict(content["metrics"]), specs, expected.handshake or {})
    if expected.handshake is not None:
        claimed, known = metrics[PARTITION_ID], expected.handshake[PARTITION_ID]
        if claimed != known:
            raise InvalidReply(f"reply claims partition {claimed}; its handshake said {known}")
    if kind == "query":
        return CheckedReply(metrics, node=check_node(content.get("node")))
    payload = None
    if kind == "train" and ("arrays" in content or "payload" in content):
        payload = check_payload(content, expected)
    if expected.evaluation_metrics is None:  # an evaluation nobody asked for is not read
        return CheckedReply(metrics, payload=payload)
    evaluation, fault = None, None
    try:
        evaluation = check_evaluation(content, expected)
    except InvalidReply as exc:
        fault = exc
    return CheckedReply(metrics, payload=payload, evaluation=evaluation, evaluation_fault=fault)


def check_evaluation(content: RecordDict, expected: Expected) -> dict[str, float | list[int]]:
    """The evaluation record of a train reply that was asked for one, checked like an
    evaluate reply's metrics."""
    if EVALUATION not in content:
        raise malformed("train reply lacks the evaluation it was asked for")
    specs = EVALUATE_METRICS | dict(expected.evaluation_metrics or {})
    handshake = expected.handshake or {}
    evaluation = check_metrics(dict(content[EVALUATION]), specs, handshake)
    if evaluation[PARTITION_ID] != handshake.get(PARTITION_ID):
        raise InvalidReply(
            f"evaluation claims partition {evaluation[PARTITION_ID]}; its handshake said "
            f"{handshake.get(PARTITION_ID)}"
        )
    return evaluation


def check_metrics(
    raw: Mapping[str, Any], specs: Mapping[str, MetricSpec], handshake: Mapping[str, int]
) -> dict[str, float | list[int]]:
    """Every metric named in ``specs``, checked. Others are dropped unread (a client build
    may report more than this server reads), but a reply may hold at most ``MAX_METRICS``."""
    if len(raw) > MAX_METRICS:
        raise malformed(f"reply holds {len(raw)} metrics, more than the {MAX_METRICS} allowed")
    missing = sorted(k for k, s in specs.items() if s.required and k not in raw)
    if missing:
        raise InvalidReply(f"reply lacks the metrics {missing}")
    checked: dict[str, float | list[int]] = {}
    for key, value in raw.items():
        spec = specs.get(key)
        if spec is None:
            continue
        if spec.items:
            checked[key] = _check_list(key, value, spec)
            continue
        number = _check_number(key, value, spec)
        limit = handshake.get(spec.bound) if spec.bound else None
        if limit is not None and number > limit:
            raise InvalidReply(
                f"metric '{key}'={number:g} exceeds its handshake's {spec.bound}={limit}"
            )
        checked[key] = int(number) if spec.integer and not math.isnan(number) else number
    return checked


def _check_number(key: str, value: Any, spec: MetricSpec) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidReply(f"metric '{key}' is {type(value).__name__}, expected a number")
    number = float(value)
    if math.isnan(number):
        if spec.nan_ok:
            return number
        raise InvalidReply(f"metric '{key}' is NaN")
    if math.isinf(number):
        raise InvalidReply(f"metric '{key}' is {number}")
    if spec.integer and not number.is_integer():
        raise InvalidReply(f"metric '{key}'={number} is not a whole number")
    if not spec.low <= number <= spec.high:
        raise InvalidReply(f"metric '{key}'={number:g} is outside [{spec.low:g}, {spec.high:g}]")
    return number


def _check_list(key: str, value: Any, spec: MetricSpec) -> list[int]:
    if not isinstance(value, list) or len(value) > spec.items:
        raise InvalidReply(f"metric '{key}' must be a list of at most {spec.items} counts")
    return [int(_check_number(f"{key}[{i}]", v, COUNT)) for i, v in enumerate(value)]


def check_node(record: ConfigRecord | None) -> dict[str, str]:
    """The node's self-description: short printable strings only (it reaches the logs)."""
    described: dict[str, str] = {}
    for key, value in dict(record or {}).items():
        if key not in NODE_FIELDS:
            raise malformed(f"node description holds unexpected field '{key}'")
        if not isinstance(value, str) or len(value) > MAX_TEXT or not value.isprintable():
            raise malformed(f"node description field '{key}' must be printable text")
        described[key] = value
    return described


def check_payload(content: Any, expected: Expected) -> Payload:
    if "arrays" not in content or "payload" not in content:
        raise malformed("train reply must hold both 'arrays' and 'payload', or neither")
    if expected.template is None:
        raise malformed("this reply may not carry tensors")
    try:
        payload = decode_payload(
            content["arrays"], content["payload"], expected.template, expected.held_masks
        )
    except PayloadError as exc:
        raise malformed(f"bad train payload: {exc}") from None
    for name, tensor in payload.tensors.items():
        if np.issubdtype(tensor.dtype, np.floating):
            bad = int(np.count_nonzero(~np.isfinite(tensor)))
            if bad:
                raise InvalidReply(f"tensor '{name}' holds {bad} NaN or infinite values")
    return payload
