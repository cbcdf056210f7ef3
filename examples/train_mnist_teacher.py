"""Train a LeNet-5 teacher on 4 000 real MNIST digits; write it and the 1 000 held-out digits.

    python examples/train_mnist_teacher.py --out-dir quickstart

writes quickstart/teacher.safetensors (upload it) and quickstart/heldout.npz (evaluate on it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from core.datasets import MNIST_MEAN, MNIST_STD, mnist_digits, save_npz
from core.evaluation import accuracy
from core.models import build
from core.training_supervised import train_classifier


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out-dir", type=Path, default=Path("quickstart"))
    parser.add_argument("--architecture", default="lenet5")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    train, heldout = mnist_digits(seed=args.seed).split(4000)
    teacher = train_classifier(build(args.architecture), train, epochs=args.epochs, seed=args.seed)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    save_file(teacher.state_dict(), str(args.out_dir / "teacher.safetensors"))
    save_npz(args.out_dir / "heldout.npz", heldout)
    print(
        json.dumps(
            {
                "teacher": str(args.out_dir / "teacher.safetensors"),
                "heldout": str(args.out_dir / "heldout.npz"),
                "teacher_accuracy_on_heldout": round(
                    accuracy(teacher, heldout.images, heldout.labels), 4
                ),
                "input_mean": [MNIST_MEAN],
                "input_std": [MNIST_STD],
            }
        )
    )


if __name__ == "__main__":
    main()
