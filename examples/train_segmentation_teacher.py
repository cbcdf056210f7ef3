"""Train a DeepLabV3 segmentation teacher on scenes of real MNIST digits; write it and held-out
scenes as a user uploads them.

    python examples/train_segmentation_teacher.py --out-dir seg

A scene is a 64 px canvas with up to four real digits (core/digit_scenes.py): 11 classes,
background and one a digit, 255 on the strokes' soft rims. Training scenes come from the first
4 000 digits, held-out scenes from the other 1 000. Writes seg/teacher.safetensors (upload it
with architecture deeplabv3_resnet_mini and the printed architecture_kwargs, input_mean and
input_std) and seg/heldout.npz (uint8 `images`, `masks`: upload it as an evaluation dataset).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from core.datasets import MNIST_MEAN, MNIST_STD, LabelledImages
from core.digit_scenes import SCENE_CLASSES, mnist_scenes
from core.models import build
from core.segmentation import segmentation_scores
from core.training_supervised import train_classifier


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out-dir", type=Path, default=Path("seg"))
    parser.add_argument("--train-scenes", type=int, default=3000)
    parser.add_argument("--heldout-scenes", type=int, default=500)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    train, heldout = mnist_scenes(args.train_scenes, args.heldout_scenes, seed=args.seed)
    kwargs = {"in_channels": 1, "width": args.width}
    teacher = build("deeplabv3_resnet_mini", **kwargs)
    train_classifier(
        teacher,
        LabelledImages(train.images, train.masks),
        epochs=args.epochs,
        batch_size=32,
        lr=2e-3,
        seed=args.seed,
    )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    save_file(teacher.state_dict(), str(args.out_dir / "teacher.safetensors"))
    np.savez_compressed(
        args.out_dir / "heldout.npz", images=heldout.pixels(), masks=heldout.masks.numpy()
    )
    scores = segmentation_scores(teacher, heldout.images, heldout.masks, SCENE_CLASSES)
    print(
        json.dumps(
            {
                "teacher": str(args.out_dir / "teacher.safetensors"),
                "heldout": str(args.out_dir / "heldout.npz"),
                "architecture": "deeplabv3_resnet_mini",
                "architecture_kwargs": kwargs,
                "teacher_miou_on_heldout": round(scores.mean_iou, 4),
                "input_mean": [MNIST_MEAN],
                "input_std": [MNIST_STD],
            }
        )
    )


if __name__ == "__main__":
    main()
