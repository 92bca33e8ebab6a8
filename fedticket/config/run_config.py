"""The typed run configuration: the only code that reads Flower's raw run config.

Flower hands the app a flat ``{key: value}`` dict parsed from TOML (``pyproject.toml``'s
``[tool.flwr.app.config]`` plus ``--run-config`` overrides). It does no type coercion
(``lr=1`` arrives as an int) and can arrive empty (no config section), so this module fills
defaults, coerces, validates every key and value, and hashes the resolved config to name the
run directory. ``RunConfig`` holds the keys every algorithm shares; each algorithm's own keys
are a ``Section`` (``fedticket.config.sections``) that it composes. Datasets, partitioners and
models are read through ``fedticket.registry``, so the config imports no data or model code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fedticket.config.fields import (
    ConfigError,
    check_value,
    choice_message,
    coerce,
    key_of,
    setting,
    shown,
    unknown_key_message,
)
from fedticket.config.limits import (
    DEVICE_INDEX_MAX,
    LINK_MBPS,
    MAX_CLIENTS,
    MAX_EPOCHS,
    MAX_LATENCY_MS,
    MAX_LR,
    MAX_RETRIES,
    MAX_ROUNDS,
    MAX_SAMPLES,
    MAX_SEED,
    MAX_THREADS,
    MAX_TIMEOUT_S,
)
from fedticket.config.sections import Section, section_classes
from fedticket.registry import DATASETS, MODELS, PARTITIONERS

# Keys that change where results go or how a run is kept, not what it computes: left out of
# the config hash (so resume=false or a checkpoint interval names the same experiment).
_WHERE_AND_HOW_KEPT = ("output-root", "resume", "checkpoint-every", "tracking")
NON_SEMANTIC_KEYS = frozenset((*_WHERE_AND_HOW_KEPT, "client-state", "client-state-threshold"))
#: a torch device the config takes (then checked against what torch itself accepts)
DEVICE_SPEC = re.compile(r"auto|cpu|cuda(:\d+)?")

S = TypeVar("S", bound=Section)


def _default_sections() -> tuple[Section, ...]:
    return tuple(cls() for cls in section_classes())


@dataclass(frozen=True)
class RunConfig:
    """Resolved run configuration. Attribute ``lr`` is run-config key ``lr``; ``num_rounds``
    is ``num-rounds`` (TOML keys use dashes)."""

    algorithm: str = setting("lotteryfl", "server/client algorithm pair (strategies/, clients/)")
    dataset: str = setting("mnist-offline", "dataset registry name", choices=DATASETS.names)
    data_dir: str = setting(
        "", "directory with dataset files (mnist-idx, torchvision datasets)", path=True
    )
    download: bool = setting(False, "let torchvision datasets download into data-dir")
    partitioner: str = setting("dirichlet", "how samples are split", choices=PARTITIONERS.names)
    dirichlet_alpha: float = setting(
        0.1,
        "Dirichlet concentration (label skew; 0.1: a few labels per client)",
        low=0,
        low_open=True,  # no upper bound: flwr-datasets splits fine up to 1e300 (about IID)
    )
    shards_per_client: int = setting(
        2, "label shards per client (shards partitioner)", low=1, high=MAX_SAMPLES
    )
    shard_size: int = setting(
        20, "images per label shard (shards partitioner)", low=1, high=MAX_SAMPLES
    )
    unbalance_rate: float = setting(
        1.0, "share of each further shard kept (shards; 1 = balanced)", low=0, high=1, low_open=True
    )
    samples_per_client: int = setting(
        50,
        "images each client draws from the pool (sampled partitioner: clients may share images)",
        low=1,
        high=MAX_SAMPLES,
    )
    test_fraction: float = setting(
        0.2,
        "local-test=split: share of each client's data held out as its local test",
        low=0,
        high=0.9,
        low_open=True,
    )
    val_fraction: float = setting(
        0.1,
        "share of each client's train split held out for validation (LotteryFL's gate)",
        low=0,
        high=0.5,
    )
    local_test: str = setting(
        "label-pool",
        "each client's test set: drawn from a held-out pool with its own labels, or a share of "
        "its own data",
        choices=("label-pool", "split"),
    )
    test_pool_fraction: float = setting(
        0.2,
        "local-test=label-pool: share of each class held out as the test pool (the global test)",
        low=0,
        high=0.9,
        low_open=True,
    )
    local_test_size: int = setting(
        200,
        "local-test=label-pool: test images per client, in its label proportions",
        low=1,
        high=MAX_SAMPLES,
    )
    public_fraction: float = setting(
        -1.0,
        "share of each class (after the test pool) held out as the server's labelled public "
        "data, which no client holds (-1: the algorithm's own, 0.1 for Fed-LTP, else 0)",
        low=-1,
        high=0.5,
    )
    model: str = setting("mnist-cnn", "model registry name", choices=MODELS.names)
    num_rounds: int = setting(20, "federated rounds", low=1, high=MAX_ROUNDS)
    fraction_train: float = setting(
        1.0, "share of clients sampled to train per round", low=0, high=1
    )
    min_train_clients: int = setting(
        2, "fewest clients sampled to train per round", low=1, high=MAX_CLIENTS
    )
    fraction_evaluate: float = setting(
        1.0, "share of clients sampled to evaluate per round", low=0, high=1
    )
    min_evaluate_clients: int = setting(
        2, "fewest clients sampled to evaluate per round", low=0, high=MAX_CLIENTS
    )
    min_available_clients: int = setting(
        2, "clients that must be connected before round 1", low=1, high=MAX_CLIENTS
    )
    local_epochs: int = setting(1, "local epochs per round", low=1, high=MAX_EPOCHS)
    batch_size: int = setting(32, "local training batch size", low=1, high=MAX_SAMPLES)
    eval_batch_size: int = setting(500, "evaluation batch size", low=1, high=MAX_SAMPLES)
    lr: float = setting(
        0.01, "local SGD learning rate (of round 1)", low=0, low_open=True, high=MAX_LR
    )
    lr_end: float = setting(
        0.0,
        "learning rate of the last round, decayed geometrically from lr (0 = constant lr)",
        low=0,
        high=MAX_LR,
    )
    momentum: float = setting(0.5, "local SGD momentum", low=0, high=1)
    # lr x weight-decay is the share of every weight a step removes: at 1 x 1, all of it
    weight_decay: float = setting(0.0, "local SGD weight decay", low=0, high=1)
    aggregation_weights: str = setting(
        "samples",
        "weight client updates by sample count or uniformly",
        choices=("samples", "uniform"),
    )
    seed: int = setting(
        42, "seed for init, partitions, sampling and training", low=0, high=MAX_SEED
    )
    evaluate_every: int = setting(
        1, "evaluate every k rounds (and after the last)", low=1, high=MAX_ROUNDS
    )
    evaluate_with_train: bool = setting(
        False, "evaluate round r in round r+1's train messages: one message a round"
    )
    sparse_layers: str = setting(
        "all",
        "which conv/linear weights masks cover: all, all but the first and last, or convs only",
        choices=("all", "middle", "conv"),
    )
    value_dtype: str = setting(
        "float32",
        "dtype of sent float values (float32 is exact)",
        choices=("float32", "float16", "bfloat16"),
    )
    value_compression: str = setting(
        "none",
        "lossless compression of sent values, used when smaller",
        choices=("none", "zlib", "lzma"),
    )
    link_up_mbps: float = setting(
        0.0,
        "link model: client upload Mbit/s (0 = off; node config overrides)",
        low=LINK_MBPS[0],
        high=LINK_MBPS[1],
        off=0.0,
    )
    link_down_mbps: float = setting(
        0.0,
        "link model: client download Mbit/s (0 = off; node config overrides)",
        low=LINK_MBPS[0],
        high=LINK_MBPS[1],
        off=0.0,
    )
    link_latency_ms: float = setting(
        0.0, "link model: one-way latency per message in ms", low=0, high=MAX_LATENCY_MS
    )
    # inf is not "wait forever" here: Flower drops replies after its message TTL (MAX_TIMEOUT_S)
    round_timeout: float = setting(
        600.0,
        "seconds to wait for replies per train/evaluate call",
        low=0,
        low_open=True,
        high=MAX_TIMEOUT_S,
    )
    client_threads: int = setting(
        0,
        "torch threads per client (0 = auto: the CPUs Ray gives each client, else all)",
        low=0,
        high=MAX_THREADS,
    )
    device: str = setting(
        "auto", "torch device for training and evaluation: auto (CUDA when present), cpu, cuda:N"
    )
    deterministic: bool = setting(
        False, "deterministic CUDA kernels (cuDNN, cuBLAS): bit-identical GPU reruns, slower"
    )
    checkpoint_every: int = setting(
        1, "write a resumable server checkpoint every k rounds (0 = never)", low=0, high=MAX_ROUNDS
    )
    resume: bool = setting(
        True, "continue from the run directory's checkpoint; false starts fresh in a new one"
    )
    client_state: str = setting(
        "auto",
        "where clients keep their state between rounds: Flower's context (memory), one snapshot "
        "file per client and round on disk (exact resume, flat memory), or disk above "
        "client-state-threshold clients",
        choices=("auto", "memory", "disk"),
    )
    client_state_threshold: int = setting(
        200, "client-state=auto: clients above which state goes to disk", low=1, high=MAX_CLIENTS
    )
    client_state_rebuild: bool = setting(
        False, "a client whose state snapshot is damaged starts fresh (else it fails, named)"
    )
    min_train_replies: int = setting(
        1,
        "fewest training replies a round needs; fewer: retry the round, then stop",
        low=1,
        high=MAX_CLIENTS,
    )
    round_retries: int = setting(
        1, "times a round with too few replies is retried", low=0, high=MAX_RETRIES
    )
    output_root: str = setting("", "results root; empty = ~/fedticket-runs", path=True)
    #: each algorithm's section, one per registered class (``section`` finds one by class)
    sections: tuple[Section, ...] = field(default_factory=_default_sections, repr=False)

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
        owners = key_owners()
        for key in raw:
            if not isinstance(key, str):
                raise ConfigError(
                    f"run-config keys are strings, got {type(key).__name__} {shown(key)}"
                )
            if key not in owners:
                raise ConfigError(unknown_key_message(key, owners))
        values: dict[type, dict[str, Any]] = {}
        for key, (owner, spec) in owners.items():
            if key in raw:
                values.setdefault(owner, {})[spec.name] = coerce(key, raw[key], spec)
        sections = tuple(section(**values.get(section, {})) for section in section_classes())
        config = cls(**values.get(cls, {}), sections=sections)
        for key, (owner, spec) in owners.items():
            part = config if owner is cls else config.section(owner)
            check_value(key, getattr(part, spec.name), spec)
        if algorithms is not None and config.algorithm not in set(algorithms):
            raise ConfigError(choice_message("algorithm", config.algorithm, sorted(algorithms)))
        config._check_combination()
        for section in config.sections:
            section.check(config)
        return config

    def _check_combination(self) -> None:
        """Checks that involve more than one shared key."""
        if self.public_fraction < 0 and self.public_fraction != -1:
            raise ConfigError(
                f"run-config key 'public-fraction': {shown(self.public_fraction)} is neither -1 "
                "(the algorithm's own share) nor a share in [0, 0.5]"
            )
        if not (DEVICE_SPEC.fullmatch(self.device) and _torch_takes_device(self.device)):
            raise ConfigError(
                f"run-config key 'device': {shown(self.device)} is not one of auto, cpu, cuda, "
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
    def section(self, kind: type[S]) -> S:
        """The section of class ``kind`` (``Section.of`` reads better at a call site)."""
        for part in self.sections:
            if type(part) is kind:
                return part
        raise KeyError(f"no run-config section {kind.__name__}; is it registered?")

    def value(self, key: str) -> Any:
        """The value of run-config key ``key`` (dashed), wherever it is declared."""
        owner, spec = key_owners()[key]
        return getattr(self if owner is RunConfig else self.section(owner), spec.name)

    def to_dict(self) -> dict[str, Any]:
        """The resolved config with run-config (dashed) keys, as written to config.json."""
        flat = {key_of(f.name): getattr(self, f.name) for f in _shared_fields()}
        for part in self.sections:
            flat.update({key_of(f.name): getattr(part, f.name) for f in dataclasses.fields(part)})
        return flat

    @property
    def public_share(self) -> float:
        """The server's public-data share this run uses (``public-fraction``; -1: the run
        algorithm's section's ``public_share``)."""
        if self.public_fraction >= 0:
            return self.public_fraction
        section = next((s for s in self.sections if s.name == self.algorithm), None)
        return section.public_share if section is not None else 0.0

    def config_hash(self) -> str:
        """Stable 12-hex digest of everything that changes the computation."""
        semantic = {k: v for k, v in self.to_dict().items() if k not in NON_SEMANTIC_KEYS}
        blob = json.dumps(semantic, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def _shared_fields() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(RunConfig) if f.name != "sections"]


def key_owners() -> dict[str, tuple[type, dataclasses.Field]]:
    """Run-config key -> (the class that declares it: ``RunConfig`` or a section, its field);
    a key declared twice is a programming error, named."""
    owners: dict[str, tuple[type, dataclasses.Field]] = {}
    parts: list[tuple[type, list[dataclasses.Field]]] = [(RunConfig, _shared_fields())]
    parts += [(cls, list(dataclasses.fields(cls))) for cls in section_classes()]
    for owner, specs in parts:
        for spec in specs:
            key = key_of(spec.name)
            if key in owners:
                raise TypeError(
                    f"run-config key '{key}' is declared by both "
                    f"{owners[key][0].__name__} and {owner.__name__}"
                )
            owners[key] = (owner, spec)
    return owners


def _torch_takes_device(spec: str) -> bool:
    """DEVICE_SPEC's ``\\d`` also takes non-ASCII digits, leading zeros and any index; torch
    refuses the first two and wraps indices above its int8."""
    index = re.fullmatch(r"cuda:(0|[1-9][0-9]{0,2})", spec, re.ASCII)
    if spec.startswith("cuda:") and index is None:
        return False
    return index is None or int(index.group(1)) <= DEVICE_INDEX_MAX


def valid_keys() -> list[str]:
    return list(key_owners())


def describe_keys() -> list[tuple[str, Any, str]]:
    """(key, default, help) for every key: the README table and ``--help`` come from this."""
    return [(key, spec.default, spec.metadata["help"]) for key, (_, spec) in key_owners().items()]
