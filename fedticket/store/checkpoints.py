"""Server checkpoints and client state snapshots: numpy archives written atomically.

A checkpoint is one ``.npz`` (a zip with a CRC per member, so corruption is detected) holding
named arrays and a JSON document (``__meta__``) with the round it completes, the config hash it
belongs to and whatever else the strategy keeps. Nothing is pickled: a checkpoint cannot run
code when loaded. ``load_checkpoint`` checks every field before the server connects its
clients, so a foreign or hand-edited file fails with one line naming the field, never with a
KeyError in the middle of a resume.
"""

from __future__ import annotations

import io
import json
import math
import re
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedticket.store.results import atomic_write_bytes

META = "__meta__"
RESUME_FIX = "delete it, or start fresh with --run-config 'resume=false'"
#: the bit generator of ``np.random.default_rng``, which every strategy's ``rng`` is
BIT_GENERATOR = np.random.PCG64
_DECIMAL = re.compile(r"0|[1-9][0-9]*")  # str(int) of a partition id or round: no sign, no 0s


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says why and what to do."""


def write_archive(path: Path, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
    """``arrays`` and ``meta`` into ``path``, atomically (the old file stays until the new one
    is complete)."""
    if META in arrays:
        raise ValueError(f"array name {META!r} is reserved")
    buffer = io.BytesIO()
    blob = np.frombuffer(json.dumps(dict(meta), sort_keys=True).encode(), np.uint8)
    np.savez(buffer, **{META: blob}, **{k: np.asarray(v) for k, v in arrays.items()})
    atomic_write_bytes(path, buffer.getvalue())


def read_archive(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, meta) of an archive; ``CheckpointError`` naming the file if it is damaged."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        meta = json.loads(arrays.pop(META).tobytes().decode())
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path} is damaged ({type(exc).__name__}: {exc})") from None
    return arrays, meta


def load_checkpoint(
    path: Path,
    config_hash: str,
    *,
    algorithm: str | None = None,
    template: Mapping[str, np.ndarray] | None = None,
    check_extra: Callable[[dict[str, np.ndarray], dict[str, Any]], None] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A server checkpoint for this config, every field checked, or ``CheckpointError`` naming
    the file, the field and the fix. Call it before clients connect: a checkpoint it returns
    restores without a KeyError.

    Parameters
    ----------
    path, config_hash
        The file, and the hash of the config resuming from it.
    algorithm
        The strategy's registered name the checkpoint must have been written by (None: any).
    template
        The model's tensors (names, shapes, dtypes) the ``global/`` arrays must match and the
        ``masks/`` arrays must fit (None: names and shapes are not checked).
    check_extra
        The strategy's check of its own state (``extra`` meta, ``extra/`` arrays, prefix
        removed); raises ``CheckpointError`` naming the field.
    """
    try:
        arrays, meta = read_archive(path)
    except CheckpointError as exc:
        raise CheckpointError(f"checkpoint {exc}; {RESUME_FIX}") from None
    try:
        check_meta(meta, config_hash, algorithm)
        check_checkpoint_arrays(arrays, template)
        if check_extra is not None:
            check_extra(split_prefix(arrays, "extra"), meta["extra"])
    except CheckpointError as exc:
        raise CheckpointError(f"checkpoint {path}: {exc}; {RESUME_FIX}") from None
    return arrays, meta


def check_meta(meta: Any, config_hash: str, algorithm: str | None = None) -> None:
    """The fields ``SparseStrategy.save_checkpoint`` writes, each of the type ``restore``
    reads, or ``CheckpointError`` naming the first bad one."""
    require(isinstance(meta, dict), META, f"is {describe(meta)}, not a JSON object")
    stored = require_key(meta, "config-hash")
    require(isinstance(stored, str), "config-hash", f"is {describe(stored)}, not a str")
    require(
        stored == config_hash,
        "config-hash",
        f"says it belongs to config {stored!r}, not {config_hash!r}",
    )
    written_by = require_key(meta, "algorithm")
    require(isinstance(written_by, str), "algorithm", f"is {describe(written_by)}, not a str")
    require(
        algorithm is None or written_by == algorithm,
        "algorithm",
        f"is {written_by!r}, not {algorithm!r} (another algorithm's checkpoint)",
    )
    done = require_key(meta, "round")
    require(is_count(done), "round", f"is {describe(done)}, not a completed round number >= 0")
    check_id_map(meta, "held", lambda v: isinstance(v, str), "a mask digest (str)")
    check_rng(require_key(meta, "rng"))
    check_id_map(
        meta,
        "reference-best",
        lambda v: is_real(v) and not math.isinf(v),
        "an accuracy (a float, NaN for none yet; not inf)",
    )
    extra = require_key(meta, "extra")
    require(isinstance(extra, dict), "extra", f"is {describe(extra)}, not a JSON object")


def check_rng(state: Any) -> None:
    """``state`` is what ``bit_generator.state`` of the strategies' RNG gave: numpy takes it
    and gives it back unchanged (numpy truncates a float silently, so compare)."""
    bit_generator = BIT_GENERATOR()
    try:
        bit_generator.state = state
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        name = BIT_GENERATOR.__name__
        raise CheckpointError(
            f"'rng' is not a {name} state numpy accepts ({type(exc).__name__}: {exc})"
        ) from None
    require(
        bit_generator.state == state,
        "rng",
        f"is not a {BIT_GENERATOR.__name__} state as numpy writes it (non-integer values?)",
    )


def check_checkpoint_arrays(
    arrays: Mapping[str, np.ndarray], template: Mapping[str, np.ndarray] | None = None
) -> None:
    """Array names ``global/<tensor>``, ``masks/<pid>/<tensor>`` or ``extra/...``; a finite
    global model matching ``template``; masks of its shapes."""
    shapes = None if template is None else {n: np.shape(t) for n, t in template.items()}
    for name in arrays:
        head, _, rest = name.partition("/")
        require(
            head in ("global", "masks", "extra") and bool(rest),
            name,
            "is not a checkpoint array (names start with global/, masks/ or extra/)",
        )
    global_arrays = split_prefix(arrays, "global")
    if template is not None:
        for name, tensor in template.items():
            require(name in global_arrays, f"global/{name}", "is missing (a tensor of the model)")
            stored = global_arrays[name]
            require(
                stored.shape == np.shape(tensor) and stored.dtype == tensor.dtype,
                f"global/{name}",
                f"is {stored.dtype}{list(stored.shape)}, the model's tensor "
                f"{tensor.dtype}{list(np.shape(tensor))}",
            )
    for name, tensor in global_arrays.items():
        require(shapes is None or name in shapes, f"global/{name}", "is no tensor of the model")
        require(tensor.dtype.kind in "biuf", f"global/{name}", f"has dtype {tensor.dtype}")
        finite = tensor.dtype.kind != "f" or bool(np.isfinite(tensor).all())
        require(finite, f"global/{name}", "holds NaN or inf (the run diverged?)")
    by_client: dict[str, dict[str, np.ndarray]] = {}
    for key, mask in split_prefix(arrays, "masks").items():
        pid, _, tensor = key.partition("/")
        require(
            bool(_DECIMAL.fullmatch(pid)) and bool(tensor),
            f"masks/{key}",
            "is not masks/<partition id>/<tensor>",
        )
        by_client.setdefault(pid, {})[tensor] = mask
    for pid, masks in by_client.items():
        check_masks(f"masks/{pid}", masks, shapes)


# ---------------------------------------------------------------------- field checks
# Public so a strategy's ``check_extra`` words its errors the same way.


def require(condition: bool, name: str, problem: str) -> None:
    """``CheckpointError("'<name>' <problem>")`` unless ``condition``."""
    if not condition:
        raise CheckpointError(f"{name!r} {problem}")


def require_key(meta: Mapping[str, Any], key: str, within: str = "") -> Any:
    """``meta[key]``, or ``CheckpointError`` naming ``<within>.<key>`` as missing."""
    name = f"{within}.{key}" if within else key
    require(key in meta, name, "is missing")
    return meta[key]


def describe(value: Any) -> str:
    """A value for an error message: short repr and JSON-ish type."""
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def is_count(value: Any) -> bool:
    """A non-negative int; not a bool (JSON's ``true`` is an int in Python)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def is_real(value: Any) -> bool:
    """An int or float (NaN and inf included); not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_id_map(
    meta: Mapping[str, Any],
    key: str,
    valid: Callable[[Any], bool],
    expected: str,
    within: str = "",
) -> None:
    """``meta[key]`` is a dict from decimal strings (partition ids, rounds: "3") to values
    that ``valid`` accepts (``expected`` says what they should be)."""
    name = f"{within}.{key}" if within else key
    value = require_key(meta, key, within)
    require(isinstance(value, dict), name, f"is {describe(value)}, not a JSON object")
    for item_key, item in value.items():
        require(
            bool(_DECIMAL.fullmatch(item_key)),
            name,
            f"has key {item_key!r}, not a number as str(int) writes it (e.g. '3')",
        )
        require(valid(item), name, f"entry {item_key!r} is {describe(item)}, not {expected}")


def check_masks(
    prefix: str,
    masks: Mapping[str, np.ndarray],
    shapes: Mapping[str, tuple[int, ...]] | None,
    *,
    complete: bool = False,
) -> None:
    """``masks`` (``<prefix>/<tensor>`` in the file) hold only 0/1 values, each the shape of
    its tensor in ``shapes`` (None: any); ``complete``: one for every tensor of ``shapes``."""
    if complete and shapes is not None:
        for name in shapes:
            require(name in masks, f"{prefix}/{name}", "is missing (a mask of every layer)")
    for name, mask in masks.items():
        where = f"{prefix}/{name}"
        if shapes is not None:
            require(name in shapes, where, "is for no tensor these masks may cover")
            require(
                mask.shape == tuple(shapes[name]),
                where,
                f"has shape {list(mask.shape)}, the model's tensor {list(shapes[name])}",
            )
        require(is_mask(mask), where, f"is no mask (dtype {mask.dtype}; bool or 0/1 values)")


def is_mask(array: np.ndarray) -> bool:
    """Boolean, or numbers that are all 0 or 1 (``astype(bool)`` keeps what they mean)."""
    if array.dtype == bool:
        return True
    return array.dtype.kind in "iuf" and bool(np.isin(array, (0, 1)).all())


def split_prefix(arrays: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The arrays stored under ``prefix/`` with the prefix removed."""
    start = f"{prefix}/"
    return {k[len(start) :]: v for k, v in arrays.items() if k.startswith(start)}


def masks_to_arrays(
    prefix: str, masks: Mapping[int, Mapping[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    return {
        f"{prefix}/{pid}/{name}": np.asarray(mask, bool)
        for pid, tensors in masks.items()
        for name, mask in tensors.items()
    }


def masks_from_arrays(
    prefix: str, arrays: Mapping[str, np.ndarray]
) -> dict[int, dict[str, np.ndarray]]:
    masks: dict[int, dict[str, np.ndarray]] = {}
    for key, value in split_prefix(arrays, prefix).items():
        pid, name = key.split("/", 1)
        masks.setdefault(int(pid), {})[name] = value.astype(bool)
    return masks
