"""FLOP counting, the measured peak, memory readings, and levers that must not change the math."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.acceleration import Acceleration
from core.loop import distill
from core.methods import zskt
from core.models import build, get_spec
from core.training import DistillationTask, Progress, TrainingHooks
from core.utilisation import FlopMeter, peak_flops, peak_rss_bytes, rss_bytes


def test_a_linear_layer_counts_two_flops_per_multiply_add_forward_and_backward() -> None:
    layer = nn.Linear(64, 32, bias=False)
    inputs = torch.randn(16, 64, requires_grad=True)
    meter = FlopMeter()
    with meter.measure():
        layer(inputs).sum().backward()
    forward = 2 * 16 * 64 * 32
    assert meter.per_iteration == 3 * forward  # forward, grad of the input, grad of the weight


def test_the_meter_counts_once_and_can_be_switched_off() -> None:
    meter = FlopMeter()
    with meter.measure():
        torch.mm(torch.randn(8, 8), torch.randn(8, 8))
    with meter.measure():
        torch.mm(torch.randn(64, 64), torch.randn(64, 64))
    assert meter.per_iteration == 2 * 8**3
    off = FlopMeter(enabled=False)
    with off.measure():
        torch.mm(torch.randn(8, 8), torch.randn(8, 8))
    assert off.per_iteration is None


def test_measuring_the_peak_leaves_the_training_random_stream_alone() -> None:
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    peak_flops.__wrapped__("cpu", size=64, seconds=0.01)  # uncached: really measures
    assert torch.equal(torch.rand(4), expected)


def test_peak_and_memory_readings_are_plausible() -> None:
    assert 1e8 < peak_flops("cpu", size=256, seconds=0.05) < 1e14
    assert 10 * 2**20 < rss_bytes() <= peak_rss_bytes() * 1.01 + 2**20


@pytest.mark.parametrize("kind", ["tf32", "bfloat16"])
def test_peaks_in_tf32_and_bf16_are_measured_and_leave_the_tf32_switch_as_it_was(
    kind: str,
) -> None:
    before = torch.backends.cuda.matmul.allow_tf32
    assert 1e7 < peak_flops.__wrapped__("cpu", size=128, seconds=0.02, kind=kind) < 1e14
    assert torch.backends.cuda.matmul.allow_tf32 == before
    with pytest.raises(ValueError, match="kind must be one of"):
        peak_flops.__wrapped__("cpu", size=128, kind="fp8")


class Recorder(TrainingHooks):
    def __init__(self) -> None:
        self.progress: list[Progress] = []

    def on_log(self, step: int, metrics: dict[str, float], progress: Progress) -> None:
        self.progress.append(progress)


def lenet_task() -> DistillationTask:
    torch.manual_seed(0)
    return DistillationTask(
        build("lenet5"),
        build("lenet5_half"),
        (1, 32, 32),
        10,
        get_spec("lenet5").taps,
        get_spec("lenet5_half").taps,
    )


def test_zskt_reports_flops_and_memory_in_its_progress() -> None:
    hooks = Recorder()
    distill(lenet_task(), zskt.ZSKTConfig(iterations=4, batch_size=16, log_every=2), hooks)
    last = hooks.progress[-1]
    assert last.flops_per_second is not None and last.flops_per_second > 0
    assert last.rss_bytes is not None and last.rss_bytes > 0


@pytest.mark.parametrize(
    "lever",
    [Acceleration(fused_optimizers=False), Acceleration(channels_last=True)],
    ids=["unfused optimisers", "channels_last"],
)
def test_levers_leave_the_math_alone(lever: Acceleration) -> None:
    config = zskt.ZSKTConfig(iterations=3, batch_size=16, student_steps=3, log_every=100)
    baseline = distill(lenet_task(), config).student.state_dict()
    changed = distill(lenet_task(), config, acceleration=lever).student.state_dict()
    for name, tensor in baseline.items():
        torch.testing.assert_close(changed[name], tensor, rtol=1e-3, atol=1e-4, msg=name)


def test_the_compile_mode_is_kept_through_resolution_and_shown() -> None:
    graphs = Acceleration(compile=True, compile_mode="reduce-overhead")
    resolved = graphs.resolved(torch.device("cpu"))
    assert resolved.compile and resolved.compile_mode == "reduce-overhead"
    assert resolved.describe()["compile_mode"] == "reduce-overhead"
    assert Acceleration().resolved(torch.device("cpu")).compile_mode is None
