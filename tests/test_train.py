from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fedticket.config import RunConfig
from fedticket.learn.data import client_data
from fedticket.learn.models import MODELS, build_model, state_arrays
from fedticket.learn.sgd import PlainSGD
from fedticket.learn.train import evaluate, train
from fedticket.sparse.masks import Mask, prunable_names


def _data():
    return client_data(RunConfig.from_run_config({"partitioner": "iid"}), 0, 10)


def test_models_have_the_papers_parameter_counts() -> None:
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(build_model("mnist-cnn", (1, 28, 28), 10, seed=0)) == 21_840
    assert count(build_model("lenet5", (3, 32, 32), 10, seed=0)) == 62_006
    vgg = build_model("vgg-bn", (3, 32, 32), 10, seed=0)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in vgg.modules())
    for name, spec in MODELS.items():
        shape = (1, 28, 28) if spec.accepts((1, 28, 28)) else (3, 32, 32)
        out = build_model(name, shape, 10, seed=0)(torch.zeros(2, *shape))
        assert out.shape == (2, 10)


def test_prunable_names_are_conv_and_linear_weights_only() -> None:
    vgg = build_model("vgg-bn", (1, 28, 28), 10, seed=0)
    names = prunable_names(vgg)
    assert all(n.endswith(".weight") for n in names)
    bn_weights = {
        f"{n}.weight" for n, m in vgg.named_modules() if isinstance(m, torch.nn.BatchNorm2d)
    }
    assert not bn_weights & set(names) and len(names) == 5


def test_same_seed_same_init_and_same_training() -> None:
    data = _data()
    runs = []
    for _ in range(2):
        model = build_model("mnist-cnn", (1, 28, 28), 10, seed=3)
        train(
            model,
            data.x_train,
            data.y_train,
            epochs=1,
            batch_size=32,
            lr=0.05,
            momentum=0.5,
            seed=11,
        )
        runs.append(state_arrays(model))
    assert all(np.array_equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_masked_training_keeps_pruned_weights_exactly_zero() -> None:
    data = _data()
    model = build_model("mnist-cnn", (1, 28, 28), 10, seed=0)
    mask = Mask.ones_like(model)
    generator = torch.Generator().manual_seed(0)
    for name in mask:
        mask[name] = torch.rand(mask[name].shape, generator=generator) < 0.3
    before = state_arrays(model)
    train(
        model,
        data.x_train,
        data.y_train,
        epochs=2,
        batch_size=32,
        lr=0.1,
        momentum=0.9,
        weight_decay=1e-3,
        mask=mask,
        seed=0,
    )
    after = state_arrays(model)
    for name, keep in mask.items():
        keep = keep.numpy()
        assert np.all(after[name][~keep] == 0.0)
        assert np.any(after[name][keep] != before[name][keep]), f"{name} did not train"
    assert abs(mask.density() - 0.3) < 0.02
    assert not np.array_equal(after["fc1.bias"], before["fc1.bias"]), "biases are never masked"


def test_training_learns_and_evaluate_reports_nan_for_empty_sets() -> None:
    data = _data()
    model = build_model("mnist-cnn", (1, 28, 28), 10, seed=0)
    first = evaluate(model, data.x_test, data.y_test)
    train(model, data.x_train, data.y_train, epochs=5, batch_size=32, lr=0.05, momentum=0.5, seed=0)
    last = evaluate(model, data.x_test, data.y_test)
    assert last.accuracy > 0.6 > first.accuracy
    assert last.num_examples == len(data.y_test)
    empty = evaluate(model, data.x_test[:0], data.y_test[:0])
    assert np.isnan(empty.accuracy) and empty.num_examples == 0


def test_mask_digest_changes_with_one_bit() -> None:
    model = build_model("mlp", (1, 28, 28), 10, seed=0)
    mask = Mask.ones_like(model)
    digest = mask.digest()
    mask["1.weight"][0, 0] = False
    assert mask.digest() != digest and mask.num_kept == mask.num_total - 1


def test_select_layers_rules() -> None:
    from fedticket.sparse.masks import select_layers

    cnn = build_model("mnist-cnn", (1, 28, 28), 10, seed=0)
    assert select_layers(cnn, "all") == ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"]
    assert select_layers(cnn, "middle") == ["conv2.weight", "fc1.weight"]  # FLASH's MNIST key file
    assert select_layers(cnn, "conv") == ["conv1.weight", "conv2.weight"]


def test_lr_schedule_decays_geometrically_over_the_run() -> None:
    from fedticket.clients.fedavg import FedAvgClient

    config = RunConfig.from_run_config({"lr": 0.1, "lr-end": 0.001, "num-rounds": 3})
    client = FedAvgClient(config, _data(), None, None)
    assert [round(client.lr_for(r), 6) for r in (1, 2, 3)] == [0.1, 0.01, 0.001]
    constant = FedAvgClient(RunConfig(), _data(), None, None)
    assert constant.lr_for(7) == RunConfig().lr


@pytest.mark.parametrize(("momentum", "weight_decay"), [(0.0, 0.0), (0.9, 0.0), (0.5, 1e-3)])
def test_plain_sgd_steps_bit_for_bit_like_torch_sgd(momentum, weight_decay) -> None:
    """``PlainSGD`` replaces ``torch.optim.SGD`` in the training loop (torch.optim imports the
    compiler stack, 0.86 s per deployed train message): the same weights after 12 steps, a
    parameter without a gradient left alone."""
    torch.manual_seed(0)
    reference = torch.nn.Sequential(
        torch.nn.Linear(12, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)
    )
    frozen = torch.nn.Parameter(torch.ones(3))
    x, y = torch.randn(48, 12), torch.randint(0, 4, (48,))
    models = [copy.deepcopy(reference), copy.deepcopy(reference)]
    optimizers = [
        torch.optim.SGD(
            [*models[0].parameters(), frozen], lr=0.05, momentum=momentum, weight_decay=weight_decay
        ),
        PlainSGD(
            [*models[1].parameters(), frozen], lr=0.05, momentum=momentum, weight_decay=weight_decay
        ),
    ]
    for step in range(12):
        batch = slice(step % 3 * 16, step % 3 * 16 + 16)
        for model, optimizer in zip(models, optimizers, strict=True):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(frozen, torch.ones(3))


def test_the_training_loop_does_not_import_torch_compiler_stack() -> None:
    script = (
        "import sys\n"
        "import numpy as np\n"
        "from fedticket.learn.models import build_model\n"
        "from fedticket.learn.train import train\n"
        "model = build_model('mnist-cnn', (1, 28, 28), 10, seed=0)\n"
        "x = np.zeros((8, 1, 28, 28), np.float32)\n"
        "train(model, x, np.zeros(8, np.int64), epochs=1, batch_size=4, lr=0.1, momentum=0.5)\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False", out.stderr
