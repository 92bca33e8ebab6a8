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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Keys that change where results go or how a run is kept, not what it computes: left out of
# the config hash (so resume=false or a checkpoint interval names the same experiment).
NON_SEMANTIC_KEYS = frozenset(
    {"output-root", "resume", "checkpoint-every", "client-state", "client-state-threshold"}
)


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
) -> Any:
    """A dataclass field carrying its help text and allowed range or choices."""
    meta = {"help": help, "choices": choices, "low": low, "high": high, "low_open": low_open}
    return field(default=default, metadata=meta)


def _dataset_names() -> list[str]:
    from fedticket.data import DATASETS

    return sorted(DATASETS)


def _partitioner_names() -> list[str]:
    from fedticket.data import PARTITIONERS

    return sorted(PARTITIONERS)


def _model_names() -> list[str]:
    from fedticket.models import MODELS

    return sorted(MODELS)


@dataclass(frozen=True)
class RunConfig:
    """Resolved run configuration. Attribute ``lr`` is run-config key ``lr``; ``num_rounds``
    is ``num-rounds`` (TOML keys use dashes)."""

    algorithm: str = _spec("lotteryfl", "server/client algorithm pair (strategies/, clients/)")
    dataset: str = _spec("mnist-offline", "dataset registry name", choices=_dataset_names)
    data_dir: str = _spec("", "directory with dataset files (mnist-idx, torchvision datasets)")
    download: bool = _spec(False, "let torchvision datasets download into data-dir")
    partitioner: str = _spec("dirichlet", "how samples are split", choices=_partitioner_names)
    dirichlet_alpha: float = _spec(
        0.1,
        "Dirichlet concentration (label skew; 0.1: a few labels per client)",
        low=0,
        low_open=True,
    )
    shards_per_client: int = _spec(2, "label shards per client (shards partitioner)", low=1)
    shard_size: int = _spec(20, "images per label shard (shards partitioner)", low=1)
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
        200, "local-test=label-pool: test images per client, in its label proportions", low=1
    )
    model: str = _spec("mnist-cnn", "model registry name", choices=_model_names)
    num_rounds: int = _spec(20, "federated rounds", low=1)
    fraction_train: float = _spec(1.0, "share of clients sampled to train per round", low=0, high=1)
    min_train_clients: int = _spec(2, "fewest clients sampled to train per round", low=1)
    fraction_evaluate: float = _spec(
        1.0, "share of clients sampled to evaluate per round", low=0, high=1
    )
    min_evaluate_clients: int = _spec(2, "fewest clients sampled to evaluate per round", low=0)
    min_available_clients: int = _spec(2, "clients that must be connected before round 1", low=1)
    local_epochs: int = _spec(1, "local epochs per round", low=1)
    batch_size: int = _spec(32, "local training batch size", low=1)
    eval_batch_size: int = _spec(500, "evaluation batch size", low=1)
    lr: float = _spec(0.01, "local SGD learning rate (of round 1)", low=0, low_open=True)
    lr_end: float = _spec(
        0.0,
        "learning rate of the last round, decayed geometrically from lr (0 = constant lr)",
        low=0,
    )
    momentum: float = _spec(0.5, "local SGD momentum", low=0, high=1)
    weight_decay: float = _spec(0.0, "local SGD weight decay", low=0)
    aggregation_weights: str = _spec(
        "samples",
        "weight client updates by sample count or uniformly",
        choices=("samples", "uniform"),
    )
    seed: int = _spec(42, "seed for init, partitions, sampling and training", low=0)
    evaluate_every: int = _spec(1, "evaluate every k rounds (and after the last)", low=1)
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
        1.0, "FedLTN: server learning rate eta_s of the momentum step", low=0, low_open=True
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
    init_epochs: int = _spec(10, "FLASH stage 1: local epochs of sparse dynamic training", low=1)
    dst_prune_rate: float = _spec(
        0.25, "FLASH: initial prune-and-regrow share of sparse dynamic training", low=0, high=1
    )
    consensus_interval: int = _spec(
        1, "FLASH JMWST: rounds between consensus-mask updates (r_int)", low=1
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
        0.0, "link model: client upload Mbit/s (0 = off; node config overrides)", low=0
    )
    link_down_mbps: float = _spec(
        0.0, "link model: client download Mbit/s (0 = off; node config overrides)", low=0
    )
    link_latency_ms: float = _spec(0.0, "link model: one-way latency per message in ms", low=0)
    round_timeout: float = _spec(
        600.0, "seconds to wait for replies per train/evaluate call", low=0, low_open=True
    )
    client_threads: int = _spec(
        0, "torch threads per client (0 = auto: the CPUs Ray gives each client, else all)", low=0
    )
    device: str = _spec(
        "auto", "torch device for training and evaluation: auto (CUDA when present), cpu, cuda:N"
    )
    deterministic: bool = _spec(
        False, "deterministic CUDA kernels (cuDNN, cuBLAS): bit-identical GPU reruns, slower"
    )
    checkpoint_every: int = _spec(
        1, "write a resumable server checkpoint every k rounds (0 = never)", low=0
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
        200, "client-state=auto: clients above which state goes to disk", low=1
    )
    client_state_rebuild: bool = _spec(
        False, "a client whose state snapshot is damaged starts fresh (else it fails, named)"
    )
    min_train_replies: int = _spec(
        1, "fewest training replies a round needs; fewer: retry the round, then stop", low=1
    )
    round_retries: int = _spec(1, "times a round with too few replies is retried", low=0)
    output_root: str = _spec("", "results root; empty = ~/fedticket-runs")

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
        from fedticket.accelerator import DEVICE_SPEC
        from fedticket.data import DATASETS
        from fedticket.models import MODELS

        if not DEVICE_SPEC.fullmatch(self.device):
            raise ConfigError(
                f"run-config key 'device': {self.device!r} is not one of auto, cpu, cuda, "
                "cuda:N (fix: --run-config 'device=\"auto\"', the default)"
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


def _key(attribute: str) -> str:
    return attribute.replace("_", "-")


def valid_keys() -> list[str]:
    return [_key(f.name) for f in dataclasses.fields(RunConfig)]


def describe_keys() -> list[tuple[str, Any, str]]:
    """(key, default, help) for every key: the README table and ``--help`` come from this."""
    return [(_key(f.name), f.default, f.metadata["help"]) for f in dataclasses.fields(RunConfig)]


def _unknown_key_message(key: str, specs: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(key, list(specs), n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(sorted(specs))}"
    return f"unknown run-config key '{key}': {hint}"


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
            f"run-config key '{key}': expected true or false, got {value!r} (fix: {example})"
        )
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind is int and not isinstance(value, bool):
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    if kind is str and isinstance(value, str):
        return value
    quoting = '; strings need quotes: key="value"' if kind is str else ""
    raise ConfigError(
        f"run-config key '{key}': expected {kind.__name__}, got {type(value).__name__} {value!r} "
        f"(fix: {example}{quoting})"
    )


def _check_value(key: str, value: Any, spec: dataclasses.Field) -> None:
    meta = spec.metadata
    choices = meta["choices"]
    if choices is not None:
        allowed = list(choices() if callable(choices) else choices)
        if value not in allowed:
            raise ConfigError(choice_message(key, value, allowed))
    low, high = meta["low"], meta["high"]
    fix = f"(fix: --run-config '{key}={json.dumps(spec.default)}', the default)"
    if low is not None and (value <= low if meta["low_open"] else value < low):
        bound = f"> {low}" if meta["low_open"] else f">= {low}"
        raise ConfigError(f"run-config key '{key}': must be {bound}, got {value} {fix}")
    if high is not None and value > high:
        raise ConfigError(f"run-config key '{key}': must be <= {high}, got {value} {fix}")


def choice_message(key: str, value: Any, allowed: Iterable[str]) -> str:
    """One line for a value outside a registry: the closest valid value and all of them."""
    allowed = list(allowed)
    close = difflib.get_close_matches(str(value), allowed, n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"run-config key '{key}': unknown value {value!r}; {hint}allowed: {', '.join(allowed)}"


def parse_run_config_string(text: str) -> dict[str, Any]:
    """Parse a ``--run-config 'k=v k2=v2'`` string as Flower does (each pair as TOML)."""
    import shlex
    import tomllib

    parsed: dict[str, Any] = {}
    for pair in shlex.split(text, posix=False):
        if "=" not in pair:
            raise ConfigError(f"run-config entry '{pair}': expected key=value")
        key, _, value = pair.partition("=")
        if not value:
            raise ConfigError(f"run-config entry '{pair}': empty value (Flower silently drops it)")
        try:
            parsed.update(tomllib.loads(f"{json.dumps(key.strip())} = {value}"))
        except tomllib.TOMLDecodeError:
            raise ConfigError(
                f"run-config key '{key}': value {value} is not TOML; "
                f'quote strings: {key}="{value}"'
            ) from None
    return parsed
