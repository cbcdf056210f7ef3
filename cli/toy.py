"""`dfkd toy`: ZSKT's 2-D toy experiment, written as PNG frames and an animated GIF."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "toy",
        help="the 2-D adversarial belief matching toy: pseudo points chase the decision boundary",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the frames and GIF")
    parser.add_argument("--steps", type=int, default=None, help="adversarial steps (default 400)")
    parser.add_argument("--every", type=int, default=None, help="steps between frames (default 20)")
    parser.add_argument("--points", type=int, default=None, help="pseudo points (default 24)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-gif", action="store_true", help="write the PNG frames only")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from core.toy import ToyConfig, run_toy

    overrides: dict[str, Any] = {"seed": args.seed, "gif": not args.no_gif}
    for name, value in (
        ("steps", args.steps),
        ("frame_every", args.every),
        ("points", args.points),
    ):
        if value is not None:
            overrides[name] = value
    result = run_toy(args.out, ToyConfig(**overrides), on_frame=lambda step, path: print(path))
    print(
        json.dumps(
            {
                "frames": len(result.frames),
                "animation": str(result.animation) if result.animation else None,
                "teacher_accuracy": round(result.teacher_accuracy, 4),
                "student_accuracy": round(result.student_accuracy, 4),
                "agreement": round(result.agreement, 4),
            }
        )
    )
    return 0
