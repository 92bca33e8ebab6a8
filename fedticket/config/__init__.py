"""The run configuration: shared keys (``run_config``), each algorithm's section
(``sections``; declared in ``fedticket/algorithms/``), the field helper and value checks
(``fields``), their bounds (``limits``) and Flower's ``--run-config`` syntax (``flower_args``).
"""

from fedticket.config.fields import ConfigError, choice_message, setting
from fedticket.config.flower_args import (
    FLOWER_PAIR,
    ignored_run_config_text,
    parse_run_config_args,
    parse_run_config_string,
)
from fedticket.config.limits import INT64_MAX, INT64_MIN
from fedticket.config.run_config import (
    DEVICE_SPEC,
    NON_SEMANTIC_KEYS,
    RunConfig,
    describe_keys,
    key_owners,
    valid_keys,
)
from fedticket.config.sections import Section, register_section

__all__ = [
    "DEVICE_SPEC",
    "FLOWER_PAIR",
    "INT64_MAX",
    "INT64_MIN",
    "NON_SEMANTIC_KEYS",
    "ConfigError",
    "RunConfig",
    "Section",
    "choice_message",
    "describe_keys",
    "ignored_run_config_text",
    "key_owners",
    "parse_run_config_args",
    "parse_run_config_string",
    "register_section",
    "setting",
    "valid_keys",
]
