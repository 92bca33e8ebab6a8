"""The typed run configuration: the only code that reads Flower's raw run config.

Flower hands the app a flat ``{key: value}`` dict parsed from TOML (``pyproject.toml``'s
``[tool.flwr.app.config]`` plus ``--run-config`` overrides). It does no type coercion
(``lr=1`` arrives as an int) and can arrive empty (no config section), so this module fills
defaults, coerces, validates every key and value, and hashes the resolved config to name the
run directory. Every error is one line that names the key, what was wrong and the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Keys that change where results go or how a run is kept, not what it computes: left out of
# the config hash (so resume=false or a checkpoint interval names the same experiment).
NON_SEMANTIC_KEYS = frozenset(
    {"output-root", "resume", "checkpoint-every", "client-state", "client-state-threshold"}
)


# Flower carries run-config ints as int64 (TOML's integers too); a Python dict can hold more.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Upper bounds of counts and sizes: far above any real run, low enough that a typo (an extra
# digit, a seed pasted from elsewhere) is caught here instead of as a hang, an allocation or an
# overflow inside numpy, torch or Flower.
MAX_SEED = 2**32 - 1  # what every seeding API takes (numpy's RandomState, which sklearn and
# older code use, stops here); seed + small offsets (FLASH: seed + 1) stay far inside torch's
# uint64 and Flower's int64
MAX_ROUNDS = 1_000_000  # one row per round in the tables; days even at the fastest round here
MAX_EPOCHS = 10_000  # passes over a client's data per round: beyond this a round never ends
MAX_SAMPLES = 100_000_000  # images: over 100 x the largest dataset here (EMNIST byclass,
# 814k); keeps products of shards, sizes and batches far inside int64 and numpy's index range
MAX_CLIENTS = 1_000_000  # nodes: 1,000 x the largest simulation measured (benchmarks/scale)
MAX_RETRIES = 100  # each retry is a whole round; more hides a broken federation
MAX_THREADS = 1024  # torch.set_num_threads takes a C int; threads beyond the cores only slow
MAX_LR = 10.0  # client and server step sizes here are 0.01-1: a larger one is a typo
MAX_TIMEOUT_S = 43_200.0  # Flower's default message TTL (flwr.app.constants.DEFAULT_TTL, 12 h):
# a reply cannot arrive later, so a longer wait, or inf, only delays the failure
MAX_LATENCY_MS = 60_000.0  # one minute: 200 x a geostationary satellite hop
LINK_MBPS = (1e-3, 1e6)  # 1 kbit/s to 1 Tbit/s; slower would make link-model seconds overflow
# Linux's limits: a path of PATH_MAX bytes (with its NUL) and components of NAME_MAX bytes
PATH_MAX_BYTES, NAME_MAX_BYTES = 4096, 255
# torch's device index is an int8: "cuda:128" silently becomes another index
DEVICE_INDEX_MAX = 127


class ConfigError(ValueError):
    """A run-config key or value that cannot be used; the message is one actionable line."""


def _spec(
    default: Any,
    help: str,
    *,
    choices: Callable[[], Iterable[str]] | tuple[str, ...] | None = None,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    allow_inf: bool = False,
    off: float | None = None,
    path: bool = False,
) -> Any:
    """A dataclass field carrying its help text and allowed range or choices.

    Floats must be finite unless ``allow_inf`` (NaN never passes). ``off`` is a value outside
    ``low``..``high`` that switches the feature off (a link speed of 0). ``path`` strings must
    be usable file-system paths."""
    meta = {
        "help": help,
        "choices": choices,
        "low": low,
        "high": high,
        "low_open": low_open,
        "allow_inf": allow_inf,
        "off": off,
        "path": path,
    }
    return field(default=default, metadata=meta)


def _dataset_names() -> list[str]:
    from fedticket.learn.data import DATASETS

    return sorted(DATASETS)


def _partitioner_names() -> list[str]:
    from fedticket.learn.data import PARTITIONERS

    return sorted(PARTITIONERS)


def _model_names() -> list[str]:
    from fedticket.learn.models import MODELS

    return sorted(MODELS)


@dataclass(frozen=True)
class RunConfig:
    """Resolved run configuration. Attribute ``lr`` is run-config key ``lr``; ``num_rounds``
    is ``num-rounds`` (TOML keys use dashes)."""

    algorithm: str = _spec("lotteryfl", "server/client algorithm pair (strategies/, clients/)")
    dataset: str = _spec("mnist-offline", "dataset registry name", choices=_dataset_names)
    data_dir: str = _spec(
        "", "directory with dataset files (mnist-idx, torchvision datasets)", path=True
    )
    download: bool = _spec(False, "let torchvision datasets download into data-dir")
    partitioner: str = _spec("dirichlet", "how samples are split", choices=_partitioner_names)
    dirichlet_alpha: float = _spec(
        0.1,
        "Dirichlet concentration (label skew; 0.1: a few labels per client)",
        low=0,
        low_open=True,  # no upper bound: flwr-datasets splits fine up to 1e300 (about IID)
    )
    shards_per_client: int = _spec(
        2, "label shards per client (shards partitioner)", low=1, high=MAX_SAMPLES
    )
    shard_size: int = _spec(
        20, "images per label shard (shards partitioner)", low=1, high=MAX_SAMPLES
    )
    unbalance_rate: float = _spec(
        1.0, "share of each further shard kept (shards; 1 = balanced)", low=0, high=1, low_open=True
    )
    test_fraction: float = _spec(
        0.2,
        "local-test=split: share of each client's data held out as its local test",
        low=0,
        high=0.9,
        low_open=True,
    )
    val_fraction: float = _spec(
        0.1,
        "share of each client's train split held out for validation (LotteryFL's gate)",
        low=0,
        high=0.5,
    )
    local_test: str = _spec(
        "label-pool",
        "each client's test set: drawn from a held-out pool with its own labels, or a share of "
        "its own data",
        choices=("label-pool", "split"),
    )
    test_pool_fraction: float = _spec(
        0.2,
        "local-test=label-pool: share of each class held out as the test pool (the global test)",
        low=0,
        high=0.9,
        low_open=True,
    )
    local_test_size: int = _spec(
        200,
        "local-test=label-pool: test images per client, in its label proportions",
        low=1,
        high=MAX_SAMPLES,
    )
    model: str = _spec("mnist-cnn", "model registry name", choices=_model_names)
    num_rounds: int = _spec(20, "federated rounds", low=1, high=MAX_ROUNDS)
    fraction_train: float = _spec(1.0, "share of clients sampled to train per round", low=0, high=1)
    min_train_clients: int = _spec(
        2, "fewest clients sampled to train per round", low=1, high=MAX_CLIENTS
    )
    fraction_evaluate: float = _spec(
        1.0, "share of clients sampled to evaluate per round", low=0, high=1
    )
    min_evaluate_clients: int = _spec(
        2, "fewest clients sampled to evaluate per round", low=0, high=MAX_CLIENTS
    )
    min_available_clients: int = _spec(
        2, "clients that must be connected before round 1", low=1, high=MAX_CLIENTS
    )
    local_epochs: int = _spec(1, "local epochs per round", low=1, high=MAX_EPOCHS)
    batch_size: int = _spec(32, "local training batch size", low=1, high=MAX_SAMPLES)
    eval_batch_size: int = _spec(500, "evaluation batch size", low=1, high=MAX_SAMPLES)
    lr: float = _spec(
        0.01, "local SGD learning rate (of round 1)", low=0, low_open=True, high=MAX_LR
    )
    lr_end: float = _spec(
        0.0,
        "learning rate of the last round, decayed geometrically from lr (0 = constant lr)",
        low=0,
        high=MAX_LR,
    )
    momentum: float = _spec(0.5, "local SGD momentum", low=0, high=1)
    # lr x weight-decay is the share of every weight a step removes: at 1 x 1, all of it
    weight_decay: float = _spec(0.0, "local SGD weight decay", low=0, high=1)
    aggregation_weights: str = _spec(
        "samples",
        "weight client updates by sample count or uniformly",
        choices=("samples", "uniform"),
    )
    seed: int = _spec(42, "seed for init, partitions, sampling and training", low=0, high=MAX_SEED)
    evaluate_every: int = _spec(
        1, "evaluate every k rounds (and after the last)", low=1, high=MAX_ROUNDS
    )
    acc_threshold: float = _spec(
        0.5,
        "LotteryFL: prune only when the received model's accuracy is above this (<0: always)",
        low=-1,
        high=1,
    )
    prune_rate: float = _spec(
        0.2, "LotteryFL: share of remaining weights pruned per step", low=0, high=1, low_open=True
    )
    target_density: float = _spec(
        0.1, "LotteryFL: prune while the kept rate is above this", low=0, high=1
    )
    gate_data: str = _spec(
        "val", "LotteryFL: data the prune gate evaluates on", choices=("val", "test")
    )
    rewind: str = _spec(
        "global",
        "LotteryFL: after pruning, restart from the received global model (reference code) or "
        "theta_0 (paper text)",
        choices=("init", "global"),
    )
    server_momentum: float = _spec(
        0.9,
        "FedLTN: server momentum beta (FedAvgM velocity; 0 = keeper mean only)",
        low=0,
        high=0.999,
    )
    server_lr: float = _spec(
        1.0,
        "FedLTN: server learning rate eta_s of the momentum step",
        low=0,
        low_open=True,
        high=MAX_LR,
    )
    jump_start: str = _spec(
        "none",
        "FedLTN Jump-Start: off, a cohort prunes first for everyone, or local pre-pruning",
        choices=("none", "cohort", "local"),
    )
    jumpstart_fraction: float = _spec(
        0.2,
        "FedLTN Jump-Start: share of clients in the cohort that prunes first",
        low=0,
        high=1,
        low_open=True,
    )
    density: float = _spec(
        0.05, "FLASH: target density of the consensus sub-model", low=0, high=1, low_open=True
    )
    flash_mode: str = _spec(
        "jmwst",
        "FLASH: fixed mask, evolving consensus mask, or per-device budgets",
        choices=("spdst", "jmwst", "hetero"),
    )
    init_fraction: float = _spec(
        0.1,
        "FLASH stage 1: share of clients that measure layer sensitivity",
        low=0,
        high=1,
        low_open=True,
    )
    init_epochs: int = _spec(
        10, "FLASH stage 1: local epochs of sparse dynamic training", low=1, high=MAX_EPOCHS
    )
    dst_prune_rate: float = _spec(
        0.25, "FLASH: initial prune-and-regrow share of sparse dynamic training", low=0, high=1
    )
    consensus_interval: int = _spec(
        1, "FLASH JMWST: rounds between consensus-mask updates (r_int)", low=1, high=MAX_ROUNDS
    )
    budget_source: str = _spec(
        "avg",
        "FLASH: layer budgets from the clients' average counts or the aggregate's non-zeros",
        choices=("avg", "aggregate"),
    )
    sparse_layers: str = _spec(
        "all",
        "which conv/linear weights masks cover: all, all but the first and last, or convs only",
        choices=("all", "middle", "conv"),
    )
    update_mode: str = _spec(
        "mean",
        "FLASH: plain mean (pruned = 0) or mean over the clients that hold each weight",
        choices=("mean", "coverage"),
    )
    value_dtype: str = _spec(
        "float32",
        "dtype of sent float values (float32 is exact)",
        choices=("float32", "float16", "bfloat16"),
    )
    value_compression: str = _spec(
        "none",
        "lossless compression of sent values, used when smaller",
        choices=("none", "zlib", "lzma"),
    )
    link_up_mbps: float = _spec(
        0.0,
        "link model: client upload Mbit/s (0 = off; node config overrides)",
        low=LINK_MBPS[0],
        high=LINK_MBPS[1],
        off=0.0,
    )
    link_down_mbps: float = _spec(
        0.0,
        "link model: client download Mbit/s (0 = off; node config overrides)",
        low=LINK_MBPS[0],
        high=LINK_MBPS[1],
        off=0.0,
    )
    link_latency_ms: float = _spec(
        0.0, "link model: one-way latency per message in ms", low=0, high=MAX_LATENCY_MS
    )
    # inf is not "wait forever" here: Flower drops replies after its message TTL (MAX_TIMEOUT_S)
    round_timeout: float = _spec(
        600.0,
        "seconds to wait for replies per train/evaluate call",
        low=0,
        low_open=True,
        high=MAX_TIMEOUT_S,
    )
    client_threads: int = _spec(
        0,
        "torch threads per client (0 = auto: the CPUs Ray gives each client, else all)",
        low=0,
        high=MAX_THREADS,
    )
    device: str = _spec(
        "auto", "torch device for training and evaluation: auto (CUDA when present), cpu, cuda:N"
    )
    deterministic: bool = _spec(
        False, "deterministic CUDA kernels (cuDNN, cuBLAS): bit-identical GPU reruns, slower"
    )
    checkpoint_every: int = _spec(
        1,
        "write a resumable server checkpoint every k rounds (0 = never)",
        low=0,
        high=MAX_ROUNDS,
    )
    resume: bool = _spec(
        True, "continue from the run directory's checkpoint; false starts fresh in a new one"
    )
    client_state: str = _spec(
        "auto",
        "where clients keep their state between rounds: Flower's context (memory), one snapshot "
        "file per client and round on disk (exact resume, flat memory), or disk above "
        "client-state-threshold clients",
        choices=("auto", "memory", "disk"),
    )
    client_state_threshold: int = _spec(
        200, "client-state=auto: clients above which state goes to disk", low=1, high=MAX_CLIENTS
    )
    client_state_rebuild: bool = _spec(
        False, "a client whose state snapshot is damaged starts fresh (else it fails, named)"
    )
    min_train_replies: int = _spec(
        1,
        "fewest training replies a round needs; fewer: retry the round, then stop",
        low=1,
        high=MAX_CLIENTS,
    )
    round_retries: int = _spec(
        1, "times a round with too few replies is retried", low=0, high=MAX_RETRIES
    )
    output_root: str = _spec("", "results root; empty = ~/fedticket-runs", path=True)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_run_config(
        cls, raw: Mapping[str, Any] | None, *, algorithms: Iterable[str] | None = None
    ) -> RunConfig:
        """Build from Flower's ``context.run_config``; missing keys take their defaults.

        ``algorithms`` lists the registered algorithm names (the registries live above this
        layer, in ``strategies/`` and ``clients/``); when given, ``algorithm`` is checked too.
        """
        raw = dict(raw or {})
        specs = {_key(f.name): f for f in dataclasses.fields(cls)}
        for key in raw:
            if not isinstance(key, str):
                raise ConfigError(
                    f"run-config keys are strings, got {type(key).__name__} {_shown(key)}"
                )
            if key not in specs:
                raise ConfigError(_unknown_key_message(key, specs))
        values = {
            f.name: _coerce(_key(f.name), raw[_key(f.name)], f)
            for f in specs.values()
            if _key(f.name) in raw
        }
        config = cls(**values)
        for f in dataclasses.fields(cls):
            _check_value(_key(f.name), getattr(config, f.name), f)
        if algorithms is not None and config.algorithm not in set(algorithms):
            raise ConfigError(choice_message("algorithm", config.algorithm, sorted(algorithms)))
        config._check_combination()
        return config

    def _check_combination(self) -> None:
        """Checks that involve more than one key."""
        from fedticket.learn.data import DATASETS
        from fedticket.learn.models import MODELS
        from fedticket.learn.torch_device import DEVICE_SPEC

        if not (DEVICE_SPEC.fullmatch(self.device) and _torch_takes_device(self.device)):
            raise ConfigError(
                f"run-config key 'device': {_shown(self.device)} is not one of auto, cpu, cuda, "
                f"cuda:N (N = 0..{DEVICE_INDEX_MAX}) "
                "(fix: --run-config 'device=\"auto\"', the default)"
            )
        dataset, model = DATASETS[self.dataset], MODELS[self.model]
        if not model.accepts(dataset.input_shape):
            fits = sorted(n for n, m in MODELS.items() if m.accepts(dataset.input_shape))
            raise ConfigError(
                f"run-config key 'model': '{self.model}' does not take dataset '{self.dataset}' "
                f"inputs {dataset.input_shape}; models that do: {', '.join(fits)}"
            )
        if dataset.needs_data_dir and not self.data_dir:
            raise ConfigError(
                f"run-config key 'data-dir': dataset '{self.dataset}' reads files from disk; "
                f"set it, e.g. --run-config 'data-dir=\"/path/to/{self.dataset}\"'"
            )

    # ------------------------------------------------------------------ views
    def to_dict(self) -> dict[str, Any]:
        """The resolved config with run-config (dashed) keys, as written to config.json."""
        return {_key(k): v for k, v in dataclasses.asdict(self).items()}

    def config_hash(self) -> str:
        """Stable 12-hex digest of everything that changes the computation."""
        semantic = {k: v for k, v in self.to_dict().items() if k not in NON_SEMANTIC_KEYS}
        blob = json.dumps(semantic, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def _torch_takes_device(spec: str) -> bool:
    """DEVICE_SPEC's ``\\d`` also takes non-ASCII digits, leading zeros and any index; torch
    refuses the first two and wraps indices above its int8."""
    index = re.fullmatch(r"cuda:(0|[1-9][0-9]{0,2})", spec, re.ASCII)
    if spec.startswith("cuda:") and index is None:
        return False
    return index is None or int(index.group(1)) <= DEVICE_INDEX_MAX


def _key(attribute: str) -> str:
    return attribute.replace("_", "-")


def valid_keys() -> list[str]:
    return [_key(f.name) for f in dataclasses.fields(RunConfig)]


def describe_keys() -> list[tuple[str, Any, str]]:
    """(key, default, help) for every key: the README table and ``--help`` come from this."""
    return [(_key(f.name), f.default, f.metadata["help"]) for f in dataclasses.fields(RunConfig)]


def _shown(value: Any, limit: int = 60) -> str:
    """``repr`` on one line, cut to ``limit`` characters (a message must stay readable)."""
    try:
        text = repr(value)
    except ValueError:  # an int of over 4,300 digits, alone or inside a list
        return f"a {type(value).__name__} too large to show"
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _unknown_key_message(key: str, specs: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(key, list(specs), n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(sorted(specs))}"
    return f"unknown run-config key {_shown(key)}: {hint}"


def _coerce(key: str, value: Any, spec: dataclasses.Field) -> Any:
    """TOML gives int for ``lr=1`` and str only when quoted: coerce what is unambiguous."""
    kind = (
        spec.type
        if isinstance(spec.type, type)
        else {"int": int, "float": float, "str": str, "bool": bool}[spec.type]
    )
    example = f"{key}={json.dumps(spec.default)}"
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(
            f"run-config key '{key}': expected true or false, got {_shown(value)} (fix: {example})"
        )
    if isinstance(value, int) and not isinstance(value, bool) and kind in (int, float):
        if not INT64_MIN <= value <= INT64_MAX:  # also keeps float() from overflowing
            raise ConfigError(
                f"run-config key '{key}': {_shown(value)} is outside the 64-bit integers Flower "
                f"carries (fix: {example})"
            )
        return float(value) if kind is float else int(value)
    if kind is float and isinstance(value, float):
        return float(value) + 0.0  # -0.0 -> 0.0: the same computation gets the same hash
    if kind is int and isinstance(value, float) and value.is_integer():
        return _coerce(key, int(value), spec)
    if kind is str and isinstance(value, str):
        return str(value)
    quoting = '; strings need quotes: key="value"' if kind is str else ""
    raise ConfigError(
        f"run-config key '{key}': expected {kind.__name__}, got {type(value).__name__} "
        f"{_shown(value)} (fix: {example}{quoting})"
    )


def _check_value(key: str, value: Any, spec: dataclasses.Field) -> None:
    meta = spec.metadata
    if isinstance(value, str):
        _check_text(key, value, is_path=meta["path"])
    choices = meta["choices"]
    if choices is not None:
        allowed = list(choices() if callable(choices) else choices)
        if value not in allowed:
            raise ConfigError(choice_message(key, value, allowed))
    fix = f"(fix: --run-config '{key}={json.dumps(spec.default)}', the default)"
    if isinstance(value, float) and not (
        math.isfinite(value) or (meta["allow_inf"] and not math.isnan(value))
    ):
        raise ConfigError(f"run-config key '{key}': must be a finite number, got {value} {fix}")
    if meta["off"] is not None and value == meta["off"]:
        return
    low, high = meta["low"], meta["high"]
    if low is not None and (value <= low if meta["low_open"] else value < low):
        bound = f"> {low}" if meta["low_open"] else f">= {low}"
        if meta["off"] is not None:
            bound = f"{meta['off']:g} (off) or {bound}"
        raise ConfigError(f"run-config key '{key}': must be {bound}, got {value} {fix}")
    if high is not None and value > high:
        shown = f"{high:g}" if isinstance(high, float) else str(high)
        raise ConfigError(f"run-config key '{key}': must be <= {shown}, got {value} {fix}")


def _check_text(key: str, value: str, *, is_path: bool) -> None:
    """No control characters (C0, DEL, C1) anywhere, text that encodes (no lone surrogates,
    which neither TOML nor Flower's messages carry), and paths a file system takes."""
    for position, char in enumerate(value):
        category = unicodedata.category(char)
        if category == "Cc":
            raise ConfigError(
                f"run-config key '{key}': contains control character U+{ord(char):04X} at "
                f"position {position} in {_shown(value)}; remove it"
            )
        if category == "Cs":
            raise ConfigError(
                f"run-config key '{key}': {_shown(value)} is not valid Unicode text (lone "
                f"surrogate U+{ord(char):04X} at position {position})"
            )
    if not is_path:
        return
    encoded = value.encode()
    if len(encoded) >= PATH_MAX_BYTES:
        raise ConfigError(
            f"run-config key '{key}': path of {len(encoded)} bytes; paths must be shorter than "
            f"{PATH_MAX_BYTES} bytes"
        )
    longest = max(encoded.split(b"/"), key=len)
    if len(longest) > NAME_MAX_BYTES:
        raise ConfigError(
            f"run-config key '{key}': path component {_shown(longest.decode())} is "
            f"{len(longest)} bytes; a file name may have at most {NAME_MAX_BYTES} bytes"
        )


def choice_message(key: str, value: Any, allowed: Iterable[str]) -> str:
    """One line for a value outside a registry: the closest valid value and all of them."""
    allowed = list(allowed)
    close = difflib.get_close_matches(str(value), allowed, n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"run-config key '{key}': unknown value {value!r}; {hint}allowed: {', '.join(allowed)}"


# The regex ``flwr.common.config.parse_config_args`` (Flower 1.39) reads each ``--run-config``
# string with; text it does not match is dropped without a word (see ignored_run_config_text).
FLOWER_PAIR = re.compile(r"(\S+?)=(\'[^\']*\'|\"[^\"]*\"|\S+)")


def parse_run_config_string(text: str) -> dict[str, Any]:
    """Parse one ``--run-config 'k=v k2=v2'`` string exactly as ``flwr run`` does."""
    return parse_run_config_args([text])


def parse_run_config_args(args: Sequence[str]) -> dict[str, Any]:
    """Parse ``flwr run``'s (repeatable) ``--run-config`` values with Flower's own parser: a
    string Flower accepts gives the same dict; one it refuses raises a ConfigError naming the
    entry (Flower's own message names none). A single value ending in ``.toml`` is a file."""
    import click
    from flwr.common.config import parse_config_args

    try:
        return parse_config_args(list(args))
    except OSError as exc:  # the .toml file
        raise ConfigError(
            f"run-config file {_shown(args[0])}: cannot read it ({exc.strerror or exc})"
        ) from None
    except (click.ClickException, ValueError) as exc:  # TOML errors are ValueErrors
        raise ConfigError(_diagnose(list(args), exc)) from None


def ignored_run_config_text(text: str) -> list[str]:
    """The parts of one ``--run-config`` string that ``flwr run`` silently ignores: whatever
    FLOWER_PAIR does not match (``lr = 0.1`` with spaces, ``lr=`` without a value)."""
    if text.endswith(".toml"):
        return []
    gaps, end = [], 0
    for match in FLOWER_PAIR.finditer(text):
        gaps.append(text[end : match.start()])
        end = match.end()
    gaps.append(text[end:])
    return [gap.strip() for gap in gaps if gap.strip()]


def _diagnose(args: list[str], error: Exception) -> str:
    """One line naming what Flower refused, found by reading the entries one at a time."""
    import tomli  # Flower's TOML parser, so both read the same

    if len(args) == 1 and args[0].endswith(".toml"):
        detail = " ".join(str(error).split())
        return f"run-config file {_shown(args[0])}: {detail}"
    if any(arg.endswith(".toml") for arg in args):
        return "run-config: a .toml file cannot be given together with key=value strings"
    for text in args:
        seen: dict[tuple[str, ...], str] = {}
        lines: list[str] = []
        for key, value in FLOWER_PAIR.findall(text):
            entry = f"{key}={value}"
            try:
                tomli.loads(f"{key} = 0")
            except tomli.TOMLDecodeError:
                return (
                    f"run-config entry {_shown(entry)}: {_shown(key)} is not a valid key "
                    "(letters, digits, '-' and '_')"
                )
            try:
                leaves = _leaves(tomli.loads(f"{key} = {value}"))
            except tomli.TOMLDecodeError:
                return _bad_value_message(key, value)
            for path, leaf in leaves:
                name = ".".join(path)  # Flower's flatten_dict joins a table's keys with dots
                if path in seen:
                    return (
                        f"run-config key '{name}' is given twice ({_shown(seen[path])}, then "
                        f"{_shown(entry)}); keep one"
                    )
                seen[path] = entry
                if not isinstance(leaf, bool | int | float | str):
                    return (
                        f"run-config key '{name}': Flower takes only bool, int, float and "
                        f"string values, got {type(leaf).__name__} {_shown(value)}"
                    )
            lines.append(f"{key} = {value}")
            try:
                tomli.loads("\n".join(lines))
            except tomli.TOMLDecodeError:
                return (
                    f"run-config entry {_shown(entry)}: conflicts with an earlier key (a table "
                    "and a value of one name); keep one"
                )
    detail = " ".join(str(error).split())
    return f"run-config: Flower cannot parse {_shown(args)}: {detail}"


def _leaves(
    table: Mapping[str, Any], prefix: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], Any]]:
    """(key path, value) of every leaf of a parsed TOML table."""
    leaves = []
    for name, value in table.items():
        path = (*prefix, name)
        leaves += _leaves(value, path) if isinstance(value, dict) else [(path, value)]
    return leaves


def _bad_value_message(key: str, value: str) -> str:
    if value.startswith(("'", '"')):
        return (
            f"run-config key {_shown(key)}: {_shown(value)} is not a valid TOML string (a "
            "quote left open, a control character or a bad \\ escape?); Flower reads a quoted "
            "value up to the next quote of the same kind"
        )
    shown = value if value.isprintable() else _shown(value)
    return (
        f'run-config key {_shown(key)}: value {shown} is not TOML; quote strings: {key}="{shown}"'
    )
