"""The allocator lever: glibc keeps freed tensor buffers, so a training loop stops faulting its
activations in at every step. Measured in fresh processes (the setting is process-wide)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from core.allocator import keep_freed_memory

LOOP = """
import json, resource, sys
from core.acceleration import Acceleration
from core.loop import distill
from core.methods import zskt
from core.models import build, get_spec
from core.training import DistillationTask
task = DistillationTask(
    teacher=build("lenet5"), student=build("lenet5_half"), input_shape=(1, 32, 32),
    num_classes=10, teacher_taps=get_spec("lenet5").taps, student_taps=get_spec("lenet5_half").taps,
)
config = zskt.ZSKTConfig(iterations=3, batch_size=128, seed=0, device="cpu")
keep = sys.argv[1] == "kept"
distill(task, config, acceleration=Acceleration(keep_freed_memory=keep))  # warm-up
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
distill(task, config, acceleration=Acceleration(keep_freed_memory=keep))
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before))
"""

glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)


def page_faults(allocator: str) -> int:
    result = subprocess.run(
        [sys.executable, "-c", LOOP, allocator], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@glibc
def test_it_takes_effect_on_glibc() -> None:
    assert keep_freed_memory() is True


@glibc
def test_a_training_loop_with_freed_buffers_kept_faults_far_less() -> None:
    default, kept = page_faults("default"), page_faults("kept")
    print(f"FIGURE minor page faults over 3 ZSKT iterations: glibc default {default}, kept {kept}")
    assert kept * 5 < default, (default, kept)
