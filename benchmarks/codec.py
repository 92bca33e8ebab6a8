"""Codec benchmark: position sizes vs the entropy bounds, value bytes, throughput, and the
bytes per round of a real model at several densities.

Usage::

    python -m benchmarks.codec            # prints tables, writes benchmarks/results/codec_*.csv
    python -m benchmarks.codec --quick    # smaller sizes (used by the test suite)
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fedticket.config import RunConfig
from fedticket.learn.data import client_data
from fedticket.learn.models import build_model, state_arrays
from fedticket.learn.train import train
from fedticket.sparse.masks import prunable_names
from fedticket.wire import codec

RESULTS = Path(__file__).resolve().parent / "results"
DENSITIES = [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.38, 0.45, 0.5]


def iid_positions(sizes: list[int]) -> pd.DataFrame:
    rows = []
    rng = np.random.default_rng(0)
    for n in sizes:
        for d in DENSITIES:
            mask = rng.random(n) < d
            buf = codec.encode_mask(mask)
            info = codec.inspect(buf)
            bound = codec.entropy_bound_bits(mask)
            sizes_ = codec.position_candidates(mask)
            rows.append(
                {
                    "n": n,
                    "density": d,
                    "scheme": info.scheme.name.lower(),
                    "position_bytes": info.position_bytes,
                    "header_bytes": info.header_bytes,
                    "bound_bytes": round(bound / 8, 1),
                    "ratio_to_bound": info.position_bytes * 8 / bound,
                    "bitmap_ratio": sizes_["bitmap"] / bound,
                    "golomb_ratio": sizes_["golomb"] / bound,
                    "enum_ratio": sizes_.get("enum", math.nan) / bound,
                }
            )
    return pd.DataFrame(rows)


def _trained(model_name: str, shape: tuple[int, int, int], epochs: int) -> torch.nn.Module:
    config = RunConfig.from_run_config({"partitioner": "iid", "model": model_name})
    data = client_data(config, 0, 1)
    model = build_model(model_name, shape, 10, seed=0)
    train(
        model,
        data.x_train,
        data.y_train,
        epochs=epochs,
        batch_size=32,
        lr=0.05,
        momentum=0.5,
        seed=0,
    )
    return model


def magnitude_mask(weight: np.ndarray, density: float) -> np.ndarray:
    """Keep the largest-magnitude ``density`` share of one layer (per-layer pruning)."""
    keep = max(1, round(density * weight.size))
    threshold = np.partition(np.abs(weight).ravel(), weight.size - keep)[weight.size - keep]
    return np.abs(weight) >= threshold


def structured_positions(epochs: int) -> pd.DataFrame:
    rows = []
    for model_name in ("mnist-cnn", "vgg-bn"):
        model = _trained(model_name, (1, 28, 28), epochs)
        weights = state_arrays(model)
        for name in prunable_names(model):
            for d in (0.05, 0.2, 0.5):
                mask = magnitude_mask(weights[name], d)
                info = codec.inspect(codec.encode_mask(mask))
                bound, row_bound = (
                    codec.entropy_bound_bits(mask),
                    codec.row_entropy_bound_bits(mask),
                )
                rows.append(
                    {
                        "model": model_name,
                        "layer": name,
                        "shape": "x".join(map(str, mask.shape)),
                        "density": round(float(mask.mean()), 4),
                        "scheme": info.scheme.name.lower(),
                        "position_bytes": info.position_bytes,
                        "bound_bytes": round(bound / 8, 1),
                        "row_bound_bytes": round(row_bound / 8, 1),
                        "ratio_to_bound": info.position_bytes * 8 / bound,
                        "ratio_to_row_bound": info.position_bytes * 8 / row_bound
                        if row_bound
                        else math.nan,
                    }
                )
    return pd.DataFrame(rows)


def value_bytes(epochs: int) -> pd.DataFrame:
    model = _trained("mnist-cnn", (1, 28, 28), epochs)
    weights = state_arrays(model)
    rows = []
    for d in (0.05, 0.2):
        masks = {n: magnitude_mask(weights[n], d) for n in prunable_names(model)}
        kept = sum(int(m.sum()) for m in masks.values())
        entries = sum(m.size for m in masks.values())
        for dtype in ("float32", "float16", "bfloat16"):
            for compression in ("none", "zlib", "lzma"):
                pos = val = 0
                for name, mask in masks.items():
                    info = codec.inspect(
                        codec.encode_tensor(
                            weights[name], mask, value_dtype=dtype, compression=compression
                        )
                    )
                    pos, val = pos + info.position_bytes, val + info.value_bytes
                rows.append(
                    {
                        "density": d,
                        "value_dtype": dtype,
                        "compression": compression,
                        "position_bits_per_entry": pos * 8 / entries,
                        "value_bits_per_kept": val * 8 / kept,
                        "value_bits_per_entry": val * 8 / entries,
                        "position_share": pos / (pos + val),
                    }
                )
    return pd.DataFrame(rows)


def _time(fn, repeats: int) -> float:
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def throughput(n: int, repeats: int) -> pd.DataFrame:
    torch.set_num_threads(1)
    rng = np.random.default_rng(1)
    values = rng.standard_normal(n).astype(np.float32)
    rows = []
    for d in (1.0, 0.05, 0.38):
        mask = None if d == 1.0 else rng.random(n) < d
        buf = codec.encode_tensor(values, mask)
        enc = _time(lambda mask=mask: codec.encode_tensor(values, mask), repeats)
        dec = _time(lambda buf=buf: codec.decode_tensor(buf), repeats)
        info = codec.inspect(buf)
        bound = codec.entropy_bound_bits(mask) if mask is not None else 0.0
        rows.append(
            {
                "entries": n,
                "density": d,
                "scheme": info.scheme.name.lower(),
                "position_ratio_to_bound": info.position_bytes * 8 / bound if bound else math.nan,
                "encode_ms": enc * 1e3,
                "decode_ms": dec * 1e3,
                "encode_MBps_dense": values.nbytes / enc / 1e6,
                "decode_MBps_dense": values.nbytes / dec / 1e6,
            }
        )
    return pd.DataFrame(rows)


def round_bytes() -> pd.DataFrame:
    """Bytes of one client's train message down and reply up, as the strategy builds them."""
    from flwr.app import ConfigRecord, Message, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from fedticket.wire.records import encode_payload, message_bytes, payload_bytes, position_bytes

    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = 1
    rows = []
    for model_name in ("mnist-cnn", "vgg-bn"):
        model = build_model(model_name, (1, 28, 28), 10, seed=0)
        tensors = state_arrays(model)
        dense = sum(t.nbytes for t in tensors.values())
        rng = np.random.default_rng(0)
        for d in (1.0, 0.5, 0.2, 0.05):
            masks = (
                None
                if d == 1.0
                else {n: rng.random(tensors[n].shape) < d for n in prunable_names(model)}
            )
            for cached in (False, True):
                record, header = encode_payload(tensors, masks, send_masks=not cached)
                content = RecordDict(
                    {
                        "config": ConfigRecord({"server-round": 1}),
                        "arrays": record,
                        "payload": header,
                    }
                )
                message = Message(content, dst_node_id=1, message_type="train")
                rows.append(
                    {
                        "model": model_name,
                        "density": d,
                        "mask": "cached" if cached else "sent",
                        "payload_bytes": payload_bytes(record),
                        "position_bytes": position_bytes(record, header),
                        "message_bytes": message_bytes(message),
                        "dense_fp32_bytes": dense,
                        "payload_vs_dense": payload_bytes(record) / dense,
                    }
                )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    sizes = [10_000, 20_000] if args.quick else [10_000, 50_000, 100_000, 1_000_000]
    epochs = 1 if args.quick else 3
    tables = {
        "positions_iid": iid_positions(sizes),
        "positions_layers": structured_positions(epochs),
        "values": value_bytes(epochs),
        "throughput": throughput(100_000 if args.quick else 1_000_000, 3 if args.quick else 15),
        "round_bytes": round_bytes(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    pd.set_option("display.width", 200)
    for name, frame in tables.items():
        frame.to_csv(args.out / f"codec_{name}.csv", index=False)
        print(f"\n## {name}\n")
        print(frame.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    print(f"\nCSV files in {args.out}")


if __name__ == "__main__":
    main()
