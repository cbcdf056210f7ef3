"""`dfkd record-metadata`: the data owner's side of metadata-based distillation (Lopes et al. 2017).

Runs the teacher on the owner's labelled data and writes per-class activation statistics to a
safetensors file; the data itself never leaves the owner. The record's size is printed before
anything is computed (full covariances grow with units squared), and `--dry-run` prints the size
of every record and statistics kind without recording.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

# Mirrors of core.metadata's constants, so that building the parser does not import torch
# (tests/core/test_lopes_cli.py checks they agree).
RECORD_TYPES = ("top_layer", "all_layers", "spectral_all_layers", "spectral_layer_pairs")
STATS_KINDS = ("diagonal", "lowrank", "full")
DEFAULT_RANK = 16
DEFAULT_TEMPERATURE = 8.0


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "record-metadata",
        help="record a teacher's per-class activation statistics on your data (Lopes et al.)",
    )
    parser.add_argument(
        "--teacher", type=Path, required=True, help="teacher weights (.safetensors)"
    )
    parser.add_argument("--teacher-arch", required=True, help="registry name, e.g. hinton1200")
    parser.add_argument(
        "--teacher-kwargs", default="{}", help="JSON object of constructor arguments"
    )
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="npz with images [N,C,H,W] (normalised as the teacher expects) and labels [N]",
    )
    parser.add_argument("--record", choices=RECORD_TYPES, default="spectral_layer_pairs")
    parser.add_argument("--stats", choices=STATS_KINDS, default="diagonal")
    parser.add_argument(
        "--rank",
        type=int,
        default=DEFAULT_RANK,
        help="principal directions kept by --stats lowrank",
    )
    parser.add_argument(
        "--components",
        type=int,
        default=None,
        help="coefficients per spectral graph (default: a tenth of its units)",
    )
    parser.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE)
    parser.add_argument(
        "--dry-run", action="store_true", help="print the size of every option and stop"
    )
    parser.add_argument("--out", type=Path, default=Path("metadata.safetensors"))
    parser.set_defaults(handler=run)


def human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def run(args: argparse.Namespace) -> int:
    from core.datasets import load_npz
    from core.metadata import (
        MetadataError,
        estimate_bytes,
        record_metadata,
        recorded_layers,
        save_metadata,
    )
    from core.models import build, get_spec
    from core.weights import load_weights, read_state_dict

    spec = get_spec(args.teacher_arch)
    kwargs = spec.resolve_kwargs(**json.loads(args.teacher_kwargs))
    teacher = load_weights(build(args.teacher_arch, **kwargs), read_state_dict(args.teacher))
    input_shape = spec.input_shape(**kwargs)
    num_classes = spec.num_classes(**kwargs)

    def size(record: str, stats: str) -> int:
        return estimate_bytes(
            teacher, input_shape, num_classes, record, stats, args.rank, args.components
        )

    layers = recorded_layers(teacher, input_shape)
    print(json.dumps({"layers": {layer.name: layer.units for layer in layers}}))
    if args.dry_run:
        for record in RECORD_TYPES:
            row = {stats: human_bytes(size(record, stats)) for stats in STATS_KINDS}
            print(json.dumps({"record": record, **row}))
        return 0

    estimate = size(args.record, args.stats)
    print(
        json.dumps(
            {
                "record": args.record,
                "stats": args.stats,
                "estimated_bytes": estimate,
                "estimated": human_bytes(estimate),
            }
        ),
        flush=True,
    )
    data = load_npz(args.data)
    if tuple(data.images.shape[1:]) != tuple(input_shape):
        print(
            f"the data's images are {list(data.images.shape[1:])}, the teacher takes "
            f"{list(input_shape)}",
            file=sys.stderr,
        )
        return 2
    started = time.perf_counter()
    try:
        metadata = record_metadata(
            teacher,
            data,
            args.record,
            args.stats,
            rank=args.rank,
            temperature=args.temperature,
            components=args.components,
        )
    except MetadataError as error:
        print(f"cannot record: {error}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    written = save_metadata(metadata, args.out)
    print(
        json.dumps(
            {
                "out": str(args.out),
                "bytes": written,
                "examples": int(metadata.counts.sum()),
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    )
    return 0
