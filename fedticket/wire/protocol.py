"""The message protocol between the server and its clients: every record name and header key,
in one place, and the server's instruction header as a typed object.

Both sides import the names from here, so a key spelled differently on one side is an import
error rather than a silently missing value. A message's ``RecordDict`` holds:

* server -> client: ``config`` (the ``Instructions`` header) and, for train and evaluate, the
  sparse payload as ``arrays`` + ``payload`` (``fedticket.wire.records``);
* client -> server: ``metrics`` (``strategies.replies`` names and checks them), for a train
  reply ``arrays`` + ``payload``, for the handshake ``node`` (the node's description).

Pure Python: building Flower records from these is ``fedticket.wire.records``' job.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# record names in a message's RecordDict
CONFIG = "config"
ARRAYS = "arrays"
PAYLOAD = "payload"
METRICS = "metrics"
NODE = "node"
#: a train reply's metrics of the earlier round's evaluation it was asked for (evaluate-round)
EVALUATION = "evaluation"

# the node description a handshake reply carries
DEVICE_CLASS = "device-class"
TORCH_DEVICE = "torch-device"
DEVICE_ERROR = "device-error"
BROADCAST_DOMAIN = "broadcast-domain"  # the receivers that hear one downlink broadcast
NODE_FIELDS = (DEVICE_CLASS, TORCH_DEVICE, DEVICE_ERROR, BROADCAST_DOMAIN)

# metrics every client reports (the algorithms add their own)
PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"
NUM_TRAIN = "num-train"
NUM_TEST = "num-test"
NUM_EXAMPLES = "num-examples"

#: a client-state key: 16 hex digits naming a run's snapshot set (``clients.state_location``)
STATE_KEY = re.compile(r"[0-9a-f]{16}")


class ProtocolError(ValueError):
    """A message whose header a receiver cannot use; the message says which field."""


@dataclass(frozen=True)
class Instructions:
    """What the server tells a client with every message (the ``config`` record).

    ``state_key`` is set when clients keep their state on disk (``client-state``), together
    with ``checkpoint_round``, the last round the server's checkpoint holds (older snapshots
    may go); ``stage`` names an algorithm's extra stage ("" for a plain round), e.g. FLASH's
    stage-1 ``"sensitivity"`` round. ``evaluate_round`` (train messages under
    ``evaluate-with-train``) asks the client to run that earlier round's evaluation on the
    received model first and reply with it in the ``EVALUATION`` record."""

    server_round: int
    algorithm: str
    state_key: str | None = None
    checkpoint_round: int | None = None
    stage: str = ""
    evaluate_round: int | None = None

    def to_dict(self) -> dict[str, int | str]:
        header: dict[str, int | str] = {
            "server-round": self.server_round,
            "algorithm": self.algorithm,
        }
        if self.stage:
            header["stage"] = self.stage
        if self.state_key is not None:
            header["state-key"] = self.state_key
            header["checkpoint-round"] = (
                self.checkpoint_round if self.checkpoint_round is not None else 0
            )
        if self.evaluate_round is not None:
            header["evaluate-round"] = self.evaluate_round
        return header

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Instructions:
        """The header of a received message, every field checked."""
        unknown = sorted(set(raw) - {*_FIELDS})
        if unknown:
            raise ProtocolError(f"message header holds unknown fields {unknown}")
        server_round = _whole(raw, "server-round", required=True)
        algorithm = _text(raw, "algorithm", required=True)
        stage = _text(raw, "stage")
        state_key = raw.get("state-key")
        if state_key is not None and (
            not isinstance(state_key, str) or not STATE_KEY.fullmatch(state_key)
        ):
            raise ProtocolError(f"server sent state-key {state_key!r}; expected 16 hex digits")
        checkpoint_round = _whole(raw, "checkpoint-round")
        evaluate_round = _whole(raw, "evaluate-round")
        if evaluate_round is not None and not 1 <= evaluate_round < server_round:
            raise ProtocolError(
                f"message header 'evaluate-round'={evaluate_round} is not an earlier round "
                f"than server-round={server_round}"
            )
        return cls(server_round, algorithm, state_key, checkpoint_round, stage, evaluate_round)


_FIELDS = (
    "server-round",
    "algorithm",
    "stage",
    "state-key",
    "checkpoint-round",
    "evaluate-round",
)


def _whole(raw: Mapping[str, Any], key: str, required: bool = False) -> int | None:
    value = raw.get(key)
    if value is None:
        if required:
            raise ProtocolError(f"message header lacks '{key}'")
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProtocolError(f"message header '{key}'={value!r} must be a whole number >= 0")
    return value


def _text(raw: Mapping[str, Any], key: str, required: bool = False) -> str:
    value = raw.get(key)
    if value is None:
        if required:
            raise ProtocolError(f"message header lacks '{key}'")
        return ""
    if not isinstance(value, str) or len(value) > 100 or not value.isprintable():
        raise ProtocolError(f"message header '{key}' must be short printable text")
    return value
