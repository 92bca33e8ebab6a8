"""Which torch device a client trains on, chosen by the ``device`` run-config key.

``auto`` takes CUDA when torch sees it, else the CPU; ``cpu``, ``cuda`` and ``cuda:N`` are
explicit, and an explicit CUDA that this machine lacks is an error that names the fix (the run
stops at the handshake, before any training). Only training, evaluation and mask maths run on
the device: payloads, the codec and the server's aggregation stay numpy on the CPU.

Determinism: on the CPU the same seed gives the same run, bit for bit. On CUDA, some kernels
(atomic adds in convolution backward passes, cuBLAS's split reductions) add in a varying order,
so runs can differ in the last bits unless ``deterministic=true`` (PyTorch's deterministic
algorithms, cuDNN's deterministic mode, a fixed cuBLAS workspace), which costs speed. cuDNN's
autotuner (``cudnn.benchmark``) stays off either way.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from fedticket.config.run_config import DEVICE_SPEC


class DeviceError(RuntimeError):
    """The asked-for device does not exist on this machine."""


def resolve_device(spec: str) -> torch.device:
    """The torch device for a ``device`` value (``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``)."""
    if not DEVICE_SPEC.fullmatch(spec):
        raise DeviceError(f'device="{spec}" is not one of auto, cpu, cuda, cuda:N')
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    fix = 'set --run-config \'device="cpu"\' (or "auto")'
    if not torch.cuda.is_available():
        if torch.version.cuda is None:
            why = f"torch {torch.__version__} is a CPU-only build"
        elif os.environ.get("CUDA_VISIBLE_DEVICES") == "":
            # Ray hides every GPU from an actor that asked for none
            why = "this client sees no GPU (CUDA_VISIBLE_DEVICES is empty)"
            fix = (
                "on the simulation engine give clients a GPU share: --federation-config "
                '"client-resources-num-gpus=0.25"; or ' + fix
            )
        else:
            why = "torch sees no CUDA device (driver? CUDA_VISIBLE_DEVICES?)"
        raise DeviceError(f'device="{spec}" needs CUDA, but {why}; {fix}')
    index = int(spec.partition(":")[2] or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(
            f'device="{spec}": this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}; '
            f"{fix} or pick one of those"
        )
    return torch.device("cuda", index)


def model_device(model: torch.nn.Module) -> torch.device:
    """Where the model's parameters live (the CPU for a model without parameters)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed the random draws on ``device`` (dropout) inside the block and restore the global
    generators after it, so a client's draws depend only on its seed."""
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        for index in cuda:  # this GPU's generator, not the current device's
            torch.cuda.default_generators[index].manual_seed(seed)
        yield


def set_deterministic(enabled: bool) -> None:
    """Deterministic kernels on CUDA (cuDNN and cuBLAS); the CPU is deterministic already.

    cuBLAS reads its workspace setting when CUDA starts, so it is set before any CUDA call.
    ``use_deterministic_algorithms`` imports torch's compiler stack (about 0.9 s in a fresh
    process, which a deployed ClientApp is for every message), so it is called only when the
    setting changes."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if torch.are_deterministic_algorithms_enabled() != enabled:
        torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = False
