"""The code's CUDA branches, run on a real GPU: autocast, device placement, checkpoints that cross
devices, exports of a GPU-trained student, and a whole job on the worker's CUDA device.

Skipped where no CUDA device is present (CI, the development machines); `bash bench/gpu_check.sh`
runs them on a GPU machine (`pytest -m cuda`).
"""

from __future__ import annotations

import copy
import io
from typing import Any

import onnx
import pytest
import torch
from fastapi.testclient import TestClient
from torch import nn

from core.acceleration import Acceleration
from core.datasets import LabelledImages
from core.evaluation import predict
from core.export import check_onnx, onnx_bytes, torchscript_bytes
from core.loop import distill
from core.losses import attention_loss
from core.methods import dfad, zskt
from core.models import build, get_spec
from core.taps import record_activations
from core.training import DistillationTask, Progress, TrainingHooks
from core.weights import load_weights, read_state_dict, state_dict_bytes
from service.settings import Settings
from tests.worker.test_job_function import upload_digits
from worker.context import make_context
from worker.job import run_job

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="needs a CUDA device; on a GPU machine: bash bench/gpu_check.sh (pytest -m cuda)",
    ),
]

GPU = "cuda"
METHODS = {"zskt": (zskt, zskt.ZSKTConfig), "dfad": (dfad, dfad.DFADConfig)}


def lenet_task(teacher: nn.Module) -> DistillationTask:
    return DistillationTask(
        teacher=copy.deepcopy(teacher),
        student=build("lenet5_half"),
        input_shape=(1, 32, 32),
        num_classes=10,
        teacher_taps=get_spec("lenet5").taps,
        student_taps=get_spec("lenet5_half").taps,
    )


def config(method: str, device: str, iterations: int, **values: Any) -> Any:
    # the generator width fixed as a job's written-back hyperparameters fix it, so a checkpoint
    # fits whichever device resumes it
    return METHODS[method][1](
        iterations=iterations, batch_size=32, seed=3, device=device, generator_width=16, **values
    )


class Recorder(TrainingHooks):
    def __init__(self, checkpoint_every: int = 0, sample_every: int = 0) -> None:
        self.checkpoint_every = checkpoint_every
        self.sample_every = sample_every
        self.checkpoints: dict[int, bytes] = {}
        self.samples: list[torch.Tensor] = []
        self.progress: list[Progress] = []
        self.metrics: list[dict[str, float]] = []

    def on_log(self, step: int, metrics: dict[str, float], progress: Progress) -> None:
        self.metrics.append(metrics)
        self.progress.append(progress)

    def on_checkpoint(self, step: int, state: dict[str, Any]) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)  # as the worker writes it to the blob store
        self.checkpoints[step] = buffer.getvalue()

    def on_samples(self, step: int, images: torch.Tensor) -> None:
        self.samples.append(images)


def loaded(checkpoint: bytes, device: str) -> dict[str, Any]:
    """As the worker reads a checkpoint: no unpickling of code, tensors onto its device."""
    return torch.load(io.BytesIO(checkpoint), map_location=device, weights_only=True)


def tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for item in value.values() for t in tensors(item)]
    if isinstance(value, list | tuple):
        return [t for item in value for t in tensors(item)]
    return []


def test_bf16_autocast_asked_for_on_cuda_runs_inside_and_hands_back_float32_logits() -> None:
    defaults = Acceleration().resolved(torch.device(GPU))
    assert not defaults.bf16_autocast  # off unless asked for (docs/methods.md, "Precision")
    assert defaults.channels_last and defaults.cudnn_benchmark and defaults.fused_optimizers
    speed = Acceleration(bf16_autocast=True).resolved(torch.device(GPU))
    model = build("lenet5").to(GPU)
    inner_dtypes: list[torch.dtype] = []
    model.get_submodule(get_spec("lenet5").taps[0]).register_forward_hook(
        lambda _module, _inputs, output: inner_dtypes.append(output.dtype)
    )
    logits = speed.forward_of(model, torch.device(GPU))(torch.randn(8, 1, 32, 32, device=GPU))
    assert inner_dtypes == [torch.bfloat16], "the forward pass did not run under bf16 autocast"
    assert logits.dtype == torch.float32 and logits.device.type == "cuda"


def test_attention_loss_of_bf16_activations_is_computed_in_float32(
    mnist_teacher: nn.Module,
) -> None:
    """Issue 21: under bf16 autocast the tapped activations arrive in bf16; the loss must
    be the float32 computation of those very activations (rounding the maps to bf16 costs
    several percent at the small differences a converged student learns from)."""
    teacher = copy.deepcopy(mnist_teacher).to(GPU).eval()
    student = copy.deepcopy(mnist_teacher).to(GPU).eval()
    with torch.no_grad():  # a nearly converged student: the teacher, slightly perturbed
        for parameter in student.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    images = torch.randn(64, 1, 32, 32, device=GPU)
    taps = get_spec("lenet5").taps
    with torch.autocast("cuda", dtype=torch.bfloat16), torch.no_grad():
        with record_activations(teacher, taps) as recorder:
            teacher(images)
            teacher_activations = [a.detach() for a in recorder.activations]
        with record_activations(student, taps) as recorder:
            student(images)
            student_activations = [a.detach() for a in recorder.activations]
    assert teacher_activations[0].dtype == torch.bfloat16
    loss = attention_loss(teacher_activations, student_activations)
    exact = attention_loss(
        [a.double() for a in teacher_activations], [a.double() for a in student_activations]
    )
    assert loss.dtype == torch.float32
    assert abs(loss.double().item() - exact.item()) <= 1e-4 * exact.item()


@pytest.mark.parametrize("method", METHODS)
def test_distil_places_teacher_student_and_generator_on_the_gpu(
    method: str, mnist_teacher: nn.Module
) -> None:
    task = lenet_task(mnist_teacher)
    hooks = Recorder(checkpoint_every=4, sample_every=4)
    module = METHODS[method][0]
    result = module.distill(task, config(method, GPU, 4, log_every=2), hooks)

    assert {p.device.type for p in task.teacher.parameters()} == {"cuda"}
    assert result.student is task.student
    assert {p.device.type for p in result.student.parameters()} == {"cuda"}
    state = loaded(hooks.checkpoints[4], "cpu")  # map nothing: see where the tensors were saved
    saved = torch.load(io.BytesIO(hooks.checkpoints[4]), weights_only=True)
    for part in ("student", "generator", "optimizer_student", "optimizer_generator"):
        assert {t.device.type for t in tensors(saved[part])} == {"cuda"}, part
    assert {t.device.type for t in tensors(state)} == {"cpu"}
    # the generator ran on the GPU; its sample grids come back to the host for PNG encoding
    assert hooks.samples and hooks.samples[0].device.type == "cpu"
    assert hooks.progress[-1].flops_per_second and hooks.progress[-1].flops_per_second > 0
    assert all(torch.isfinite(torch.tensor(list(m.values()))).all() for m in hooks.metrics)


@pytest.mark.parametrize(("written_on", "resumed_on"), [(GPU, "cpu"), ("cpu", GPU)])
@pytest.mark.parametrize("method", METHODS)
def test_checkpoint_written_on_one_device_resumes_on_the_other(
    method: str, written_on: str, resumed_on: str, mnist_teacher: nn.Module
) -> None:
    module = METHODS[method][0]
    first = Recorder(checkpoint_every=3)
    module.distill(lenet_task(mnist_teacher), config(method, written_on, 6), first)
    checkpoint = loaded(first.checkpoints[3], resumed_on)

    task = lenet_task(mnist_teacher)
    resumed = Recorder()
    result = module.distill(
        task, config(method, resumed_on, 6, log_every=1), resumed, resume_from=checkpoint
    )

    assert result.steps == 6
    assert [p.step for p in resumed.progress] == [4, 5, 6]
    assert {p.device.type for p in result.student.parameters()} == {torch.device(resumed_on).type}
    before = {k: v.to(resumed_on) for k, v in checkpoint["student"].items()}
    after = result.student.state_dict()
    assert any(not torch.equal(before[name], after[name]) for name in before), "no training"
    assert all(torch.isfinite(torch.tensor(list(m.values()))).all() for m in resumed.metrics)


@pytest.mark.parametrize("method", METHODS)
def test_a_run_resumed_on_the_same_gpu_continues_bit_for_bit(
    method: str, mnist_teacher: nn.Module
) -> None:
    """The reliability claim (a redelivered job continues bit for bit) on the GPU path, where
    cuDNN autotuning picks kernels at run time."""
    module = METHODS[method][0]
    straight = Recorder(checkpoint_every=3)
    whole = module.distill(lenet_task(mnist_teacher), config(method, GPU, 6), straight)
    resumed = module.distill(
        lenet_task(mnist_teacher),
        config(method, GPU, 6),
        resume_from=loaded(straight.checkpoints[3], GPU),
    )
    expected, got = whole.student.state_dict(), resumed.student.state_dict()
    different = [name for name in expected if not torch.equal(expected[name], got[name])]
    assert not different, f"resumed run differs from the straight one in {different}"


def test_student_trained_on_the_gpu_exports_to_onnx_torchscript_and_safetensors(
    mnist_teacher: nn.Module, digits: tuple[LabelledImages, LabelledImages]
) -> None:
    task = lenet_task(mnist_teacher)
    student = distill(task, config("zskt", GPU, 20)).student
    # the CUDA defaults leave its convolution weights channels_last on the GPU
    assert any(
        p.dim() == 4 and p.shape[1] > 1 and not p.is_contiguous() for p in student.parameters()
    )
    images = digits[1].images[:256]
    on_gpu = predict(student, images)

    weights = state_dict_bytes(student)
    reloaded = load_weights(build("lenet5_half"), read_state_dict(weights))
    assert torch.equal(predict(reloaded, images), on_gpu)

    exported = onnx_bytes(student, (1, 32, 32))
    onnx.checker.check_model(onnx.load_from_string(exported))
    assert check_onnx(student, exported, (1, 32, 32)) < 1e-3
    scripted = torch.jit.load(io.BytesIO(torchscript_bytes(student, (1, 32, 32))))
    assert torch.equal(scripted(images).argmax(1), on_gpu)


def test_a_job_on_the_workers_cuda_device_ends_with_its_report_and_exports(
    client: TestClient,
    settings: Settings,
    teacher_id: str,
    digits: tuple[LabelledImages, LabelledImages],
) -> None:
    """The job function with DFKD_DEVICE=cuda: training on the GPU, the student exported from it,
    and the evaluation report (MTE walks inputs through student and teacher together)."""
    evaluation = upload_digits(
        client, LabelledImages(digits[1].images[:200], digits[1].labels[:200])
    )
    spec = {"teacher_id": teacher_id, "student": {"architecture": "lenet5_half"}, "iterations": 40}
    spec |= {"batch_size": 64, "checkpoint_every": 20, "evaluation_dataset_id": evaluation}
    job = client.post("/v1/jobs", json={**spec, "mte_images": 20, "mte_steps": 10}).json()
    run_job(job["id"], make_context(settings.model_copy(update={"device": GPU})))

    final = client.get(f"/v1/jobs/{job['id']}").json()
    assert final["status"] == "succeeded", final["error"]
    # the paper's generator width, chosen by the worker's device and written back to the job
    assert final["hyperparameters"]["generator_width"] == 128
    events = [e["message"] for e in client.get(f"/v1/jobs/{job['id']}/events").json()["items"]]
    assert any("on cuda" in message for message in events), events
    assert any("ONNX student checked" in message for message in events), events
    report = client.get(final["links"]["report"]).json()
    assert report["mte"]["images"] == 20 and 0 <= report["mte"]["mte"] < 1
    assert final["progress"]["utilisation"] > 0
    student = client.get(f"/v1/jobs/{job['id']}/student")
    assert student.status_code == 200
    load_weights(build("lenet5_half"), read_state_dict(student.content))
