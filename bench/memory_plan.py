"""The job memory estimate (core/memory_plan.py) against a measured training step: a timm teacher
and student at 224 px, one KD step (student forward and backward through a pseudo batch that
also takes the teacher's gradient, as the generator methods do), peak RSS of this process.

    .venv/bin/python bench/memory_plan.py --batch 32

Run it in a fresh process: peak RSS is the process's high-water mark.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from pathlib import Path

import timm
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.memory_plan import plan_training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="resnet18")
    parser.add_argument("--student", default="test_resnet")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    torch.set_num_threads(1)
    teacher = timm.create_model(args.teacher, num_classes=10).eval()
    student = timm.create_model(args.student, num_classes=10)
    shape = (3, args.size, args.size)
    plan = plan_training(teacher, student, shape)
    optimizer = torch.optim.Adam(student.parameters())
    pseudo = torch.randn(args.batch, *shape, requires_grad=True)
    loss = F.kl_div(
        F.log_softmax(student(pseudo), 1), F.softmax(teacher(pseudo), 1), reduction="batchmean"
    )
    loss.backward()
    optimizer.step()
    measured = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        json.dumps(
            {
                "teacher": args.teacher,
                "student": args.student,
                "input": list(shape),
                "batch": args.batch,
                "estimate_gib": round(plan.peak_bytes(args.batch) / 2**30, 2),
                "measured_peak_rss_gib": round(measured / 2**30, 2),
                "estimate_per_sample_mib": round(plan.per_sample_bytes / 2**20, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
