"""Accuracy of a downloaded student on held-out real digits.

python examples/evaluate_student.py student.safetensors quickstart/heldout.npz --architecture lenet5_half
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from core.datasets import load_npz
from core.evaluation import accuracy
from core.models import build
from core.weights import load_weights, read_state_dict


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("student", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("--architecture", default="lenet5_half")
    parser.add_argument("--kwargs", default="{}", help="JSON object of constructor arguments")
    args = parser.parse_args()
    model = load_weights(
        build(args.architecture, **json.loads(args.kwargs)), read_state_dict(args.student)
    )
    data = load_npz(args.data)
    print(
        json.dumps(
            {
                "accuracy": round(accuracy(model, data.images, data.labels), 4),
                "images": len(data.labels),
            }
        )
    )


if __name__ == "__main__":
    main()
