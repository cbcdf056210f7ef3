"""Do two checkouts train the same students? A refactor of the loop should change no number.

    git worktree add /tmp/before <commit>
    .venv/bin/python bench/loop_equivalence.py --reference /tmp/before

Runs ZSKT, DFAD (12 iterations, their schedules included), Lopes (the tiny record of
tests/core/test_lopes.py) and few-shot fine-tuning (10 steps) on the same seeds in each checkout, in
a process of its own, and prints, per method, whether every tensor of the students is equal and the
largest difference.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

# runs inside one checkout: the loop's entry point is core.loop.distill since issue 12, each
# method module's own distill before
TRAIN = """
import sys, torch
sys.path.insert(0, sys.argv[1])
out = sys.argv[2]
from core.models import build, get_spec
from core.training import DistillationTask
from core.datasets import mnist_digits
from core.methods import dfad, lopes, zskt
from tests.core.test_lopes import tiny_config, tiny_task
from pathlib import Path
if Path(sys.argv[1], "core", "loop.py").exists():  # (an editable install would mix checkouts)
    from core.loop import distill
    from core.fewshot import FewShotConfig, fine_tune
else:
    distill = None
    from core.methods.fewshot import FewShotConfig, distill as fine_tune

def lenet():
    torch.manual_seed(0)
    return DistillationTask(build("lenet5"), build("lenet5_half"), (1, 32, 32), 10,
                            get_spec("lenet5").taps, get_spec("lenet5_half").taps)

runs = {
    "zskt": (zskt, lenet, zskt.ZSKTConfig(iterations=12, batch_size=16, student_steps=2, generator_width=8)),
    "dfad": (dfad, lenet, dfad.DFADConfig(iterations=12, batch_size=16, student_steps=2, generator_width=0.25)),
    "lopes": (lopes, tiny_task, tiny_config()),
}
for name, (module, task, config) in runs.items():
    result = distill(task(), config) if distill else module.distill(task(), config)
    torch.save(result.student.state_dict(), f"{out}/{name}.pt")
data = mnist_digits(seed=0).split(200)[0]
result = fine_tune(lenet(), FewShotConfig(iterations=10, batch_size=16), data)
torch.save(result.student.state_dict(), f"{out}/few_shot.pt")
"""


def train(checkout: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", TRAIN, str(checkout), str(out)], cwd=checkout, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, required=True, help="the other checkout")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        before, after = Path(folder) / "reference", Path(folder) / "this"
        train(args.reference.resolve(), before)
        train(REPO, after)
        for name in ("zskt", "dfad", "lopes", "few_shot"):
            first = torch.load(before / f"{name}.pt", weights_only=True)
            second = torch.load(after / f"{name}.pt", weights_only=True)
            equal = all(torch.equal(first[key], second[key]) for key in first)
            largest = max((first[key] - second[key]).abs().max().item() for key in first)
            print(f"{name:9s} identical={equal} largest difference={largest:.3g}")


if __name__ == "__main__":
    main()
