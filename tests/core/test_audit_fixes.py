"""The defects of the science audit (issue 21), each pinned by a test that failed before its fix."""

from __future__ import annotations

import copy
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.losses import attention_loss, kl_divergence
from core.methods.zskt import PAPER_BETA_AT_MEAN_REDUCTION, ZSKTConfig, adam_eps, student_loss
from core.models import build, get_spec
from core.taps import ActivationRecorder, attention_recorders
from core.training import clip_and_step

RELEASED_CLIP = 5.0


def _released_student_loss(
    teacher_logits: torch.Tensor,
    student_logits: torch.Tensor,
    teacher_activations: list[torch.Tensor],
    student_activations: list[torch.Tensor],
) -> torch.Tensor:
    """ZSKT's released student loss: KL under the old reduction='mean' (over batch x classes)."""
    kl_mean = F.kl_div(
        F.log_softmax(student_logits, dim=1), F.softmax(teacher_logits, dim=1), reduction="mean"
    )
    return kl_mean + PAPER_BETA_AT_MEAN_REDUCTION * attention_loss(
        teacher_activations, student_activations
    )


def test_zskt_student_update_equals_the_released_codes_with_its_clip() -> None:
    torch.manual_seed(0)
    teacher = build("lenet5").eval()
    ours, released = build("lenet5_half"), None
    released = copy.deepcopy(ours)
    pseudo = 3 * torch.randn(64, 1, 32, 32)
    config = ZSKTConfig().effective(10)
    teacher_taps = ActivationRecorder(teacher, get_spec("lenet5").taps)
    with torch.no_grad():
        teacher_logits = teacher(pseudo)
        teacher_activations = list(teacher_taps.activations)
    released_norms = []
    for student, is_ours in ((ours, True), (released, False)):
        taps = ActivationRecorder(student, get_spec("lenet5_half").taps)
        eps = adam_eps(10) if is_ours else 1e-8  # the released code kept torch's default
        optimizer = torch.optim.Adam(student.parameters(), lr=config.lr_student, eps=eps)
        for _ in range(5):
            logits = student(pseudo)
            if is_ours:
                loss = student_loss(
                    config, teacher_logits, logits, teacher_activations, taps.activations
                )[0]
            else:
                loss = _released_student_loss(
                    teacher_logits, logits, teacher_activations, taps.activations
                )
            optimizer.zero_grad()
            loss.backward()
            if not is_ours:
                released_norms.append(
                    torch.cat([p.grad.flatten() for p in student.parameters()]).norm().item()
                )
            assert config.grad_clip is not None
            clip_and_step(
                optimizer, student.parameters, config.grad_clip if is_ours else RELEASED_CLIP
            )
        taps.close()
    assert max(released_norms) > RELEASED_CLIP, "the clip never acted: the test proves nothing"
    for mine, theirs in zip(ours.parameters(), released.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6)


def test_zskt_clip_and_adam_epsilon_scale_with_the_class_count() -> None:
    from core.loop import _context
    from core.methods.zskt import ZSKT
    from core.training import DistillationTask

    task = DistillationTask(build("lenet5"), build("lenet5_half"), (1, 32, 32), 10)
    context = _context(task, ZSKTConfig().effective(10), None, print)
    state = ZSKT(context)
    context.close()
    for optimizer in (state.optimizer_student, state.optimizer_generator):
        assert optimizer.param_groups[0]["eps"] == 1e-7
    assert ZSKTConfig().effective(10).grad_clip == 50.0
    assert ZSKTConfig().effective(100).grad_clip == 500.0
    assert ZSKTConfig(grad_clip=0).effective(10).grad_clip == 0
    assert ZSKTConfig(grad_clip=7.5).effective(10).grad_clip == 7.5


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return abs(a.item() - b.item()) / abs(b.item())


@pytest.mark.parametrize("gap", [0.05, 0.01])
def test_losses_under_cpu_autocast_equal_the_float32_losses(gap: float) -> None:
    """bf16 tensors (as a bf16 forward pass hands over) inside an autocast region: the losses are
    computed in float32 from their values, so they equal the float32 computation on the same values."""
    torch.manual_seed(0)
    teacher_activation = torch.rand(16, 8, 8, 8) + 0.5
    student_activation = teacher_activation * (1 + gap * torch.randn_like(teacher_activation))
    teacher_logits = 5 * torch.randn(16, 10)
    student_logits = teacher_logits + 3 * gap * torch.randn(16, 10)
    as_bf16 = [t.bfloat16() for t in (teacher_activation, student_activation)]
    logits_bf16 = [t.bfloat16() for t in (teacher_logits, student_logits)]
    expected_attention = attention_loss([as_bf16[0].float()], [as_bf16[1].float()])
    expected_kl = kl_divergence(logits_bf16[0].float(), logits_bf16[1].float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        attention = attention_loss([as_bf16[0]], [as_bf16[1]])
        kl = kl_divergence(*logits_bf16)
    assert attention.dtype == torch.float32 and kl.dtype == torch.float32
    assert _relative(attention, expected_attention) < 1e-4
    assert _relative(kl, expected_kl) < 1e-4


def test_bf16_autocast_is_off_unless_asked_for() -> None:
    from core.acceleration import Acceleration

    assert Acceleration().resolved(torch.device("cpu")).bf16_autocast is False
    assert Acceleration().resolved(torch.device("cuda")).bf16_autocast is False
    assert Acceleration(bf16_autocast=True).resolved(torch.device("cpu")).bf16_autocast is True


class _TwoStages(nn.Module):
    """Two taps: the first at 16 px, the second at `second_size` px."""

    def __init__(self, second_size: int) -> None:
        super().__init__()
        self.first = nn.Conv2d(1, 4, 3, padding=1, stride=2)
        self.second = nn.Conv2d(4, 4, 3, padding=1, stride=16 // second_size)
        self.head = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.second(self.first(x)).mean(dim=(2, 3)))


def test_a_partial_drop_of_tap_pairs_is_warned_about() -> None:
    teacher, student = _TwoStages(8), _TwoStages(4)
    taps = ("first", "second")
    teacher_taps, student_taps, warning = attention_recorders(
        teacher, taps, student, taps, (1, 32, 32), True, without="KL alone"
    )
    assert warning is not None and "1 of 2" in warning and "second ~ second" in warning
    assert teacher_taps.active and student_taps.active
    _, _, no_warning = attention_recorders(
        teacher, taps, _TwoStages(8), taps, (1, 32, 32), True, without="KL alone"
    )
    assert no_warning is None


def test_a_nan_in_the_recorded_signal_fails_at_once_naming_the_layer() -> None:
    from core.datasets import LabelledImages
    from core.metadata import record_metadata
    from core.metadata.layers import MetadataError

    torch.manual_seed(0)
    teacher = build("hinton1200").eval()
    images = torch.randn(40, 1, 28, 28)
    images[7, 0, 3, 3] = float("nan")
    data = LabelledImages(images, torch.arange(40) % 10)
    started = time.perf_counter()
    with pytest.raises(MetadataError, match=r"layer 'fc1'.*example 7"):
        record_metadata(teacher, data, "all_layers", "full")
    assert time.perf_counter() - started < 1.0


def test_a_non_finite_signal_is_refused_by_the_statistics_within_a_second() -> None:
    from core.metadata.statistics import ClassStatistics

    signal = torch.randn(20, 6)
    signal[3, 2] = float("inf")
    started = time.perf_counter()
    with pytest.raises(ValueError, match=r"layer 'x'.*NaN or infinite"):
        ClassStatistics.fit("full", signal, torch.arange(20) % 2, 2, what="layer 'x'")
    assert time.perf_counter() - started < 1.0
