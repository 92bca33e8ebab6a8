"""The one place that turns fedticket tensors into Flower records and measures messages.

Tensors travel as an ``ArrayRecord`` of numpy ``Array``s (Flower serializes them with
``np.save(allow_pickle=False)``: no pickle anywhere). Metadata travels in a ``ConfigRecord``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord, Message
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects


class PayloadError(ValueError):
    """A received record that cannot be turned back into tensors."""


def arrays_to_record(tensors: Mapping[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({name: Array(np.ascontiguousarray(t)) for name, t in tensors.items()})


def record_to_arrays(
    record: ArrayRecord, expected: Mapping[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Decode a record; with ``expected`` (name -> template) names, shapes, dtypes must match."""
    try:
        tensors = {name: array.numpy() for name, array in record.items()}
    except Exception as exc:
        raise PayloadError(f"cannot decode array record: {exc}") from exc
    if expected is not None:
        if set(tensors) != set(expected):
            missing, extra = (
                sorted(set(expected) - set(tensors)),
                sorted(set(tensors) - set(expected)),
            )
            raise PayloadError(f"tensor names differ: missing {missing}, unexpected {extra}")
        for name, template in expected.items():
            got = tensors[name]
            if got.shape != template.shape or got.dtype != template.dtype:
                raise PayloadError(
                    f"tensor '{name}': got {got.dtype}{list(got.shape)}, "
                    f"expected {template.dtype}{list(template.shape)}"
                )
        tensors = {name: tensors[name] for name in expected}  # canonical order
    return tensors


def payload_bytes(record: ArrayRecord | None) -> int:
    """Bytes of the encoded tensor buffers (each numpy ``Array`` = .npy header + raw data)."""
    return 0 if record is None else sum(len(array.data) for array in record.values())


def message_bytes(message: Message) -> int:
    """Bytes of the message as Flower 1.39 moves it: the sum of its content-addressed objects
    (Message, RecordDict, records, Arrays, chunks), each deflated; within about 1 % of the
    SuperLink's own traffic counters (see FLOWER-NOTES 2)."""
    return sum(len(obj.deflate()) for obj in get_all_nested_objects(message).values())


def dense_bytes(tensors: Mapping[str, np.ndarray]) -> int:
    """Raw bytes of the tensors as a dense state: what FedAvg sends for them."""
    return int(sum(t.nbytes for t in tensors.values()))
