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
