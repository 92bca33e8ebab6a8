from __future__ import annotations

import pandas as pd
import pytest

pytestmark = pytest.mark.slow


def test_codec_benchmark_quick_run_writes_its_tables(tmp_path) -> None:
    from benchmarks.codec import main

    main(["--quick", "--out", str(tmp_path)])
    positions = pd.read_csv(tmp_path / "codec_positions_iid.csv")
    assert (positions["ratio_to_bound"] <= 1.05).all()
    for name in ("positions_layers", "values", "throughput", "round_bytes"):
        assert len(pd.read_csv(tmp_path / f"codec_{name}.csv")) > 0


def test_device_benchmark_runs_the_cpu_and_names_a_missing_gpu(tmp_path) -> None:
    """``device="cpu"`` through ``flwr run``; without CUDA its row says why instead of timing."""
    import torch

    from benchmarks.device import main

    args = "--workloads lotteryfl/mnist-cnn --clients 2 --rounds 3 --epochs 1"
    table = main([*args.split(), "--out", str(tmp_path)])
    cpu = table[table["device"] == "cpu"].iloc[0]
    assert cpu["round_s"] > 0 and cpu["skipped"] == ""
    cuda = table[table["device"] == "cuda"].iloc[0]
    if not torch.cuda.is_available():
        assert "needs CUDA" in cuda["skipped"] and pd.isna(cuda["round_s"])
    assert (tmp_path / "device.csv").exists()
