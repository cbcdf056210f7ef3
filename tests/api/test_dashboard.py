"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against `dfkd serve`
on the embedded default (its runner processes run the jobs for real).

The whole quickstart without a terminal: upload a labelled set and a teacher through the pages,
start jobs from the generated form, watch one reach `succeeded` with curves and sample grids,
read its report, download the student in three formats (the safetensors one loads into the
registry's model), overlay two jobs on the compare page, and the key prompt of a deployment that
requires keys. No page may log a console error. Screenshots land in the test's tmp folder, and
also in DFKD_DASHBOARD_SCREENSHOTS when it names a folder: the README's come from

    DFKD_DASHBOARD_SCREENSHOTS=docs/dashboard pytest tests/api/test_dashboard.py
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import onnx
import pytest
from playwright import sync_api

from core.models import build
from core.weights import load_weights, read_state_dict
from tests.processes import create_api_key, embedded_env, start_api, stop, upload_lenet_teacher

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LAPTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
JOB_SECONDS = 240  # a 30-iteration job, its report with MTE and its exports, on 2 shared cores
# what Chromium logs for a request the API refused; expected only where a refusal is under test
REFUSED = re.compile(r"^Failed to load resource: the server responded with a status of (\d+)")


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    if not Path(CHROMIUM).is_file():
        pytest.fail("chromium is not installed: `make browser` installs Debian's package")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-quic"]
        )
        yield browser
        browser.close()


def serve(tmp_path: Path, **settings: str) -> tuple[Iterator[str], dict[str, str]]:
    env = embedded_env(tmp_path / "data", **settings)
    process, base_url = start_api(env, tmp_path / "serve.log")

    def running() -> Iterator[str]:
        try:
            yield base_url
        finally:
            stop(process)

    return running(), env


class Console:
    """Every console error and uncaught exception of the pages of one browser context."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def refusals(self) -> list[int]:
        """The statuses of the refused requests Chromium logged, in order."""
        return [int(m[1]) for m in map(REFUSED.match, self.errors) if m]

    def others(self) -> list[str]:
        return [error for error in self.errors if not REFUSED.match(error)]

    def watch(self, page: sync_api.Page) -> sync_api.Page:
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        return page


def screenshot(page: sync_api.Page, folder: Path, name: str) -> None:
    folder.mkdir(exist_ok=True)
    page.screenshot(path=folder / f"{name}.png", full_page=True)
    if published := os.environ.get("DFKD_DASHBOARD_SCREENSHOTS"):
        shutil.copyfile(folder / f"{name}.png", Path(published) / f"{name}.png")


WIDER_THAN_THE_PAGE = """() => [...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1
                 && !e.closest('.table-wrap'))
    .slice(0, 5).map(e => e.tagName + '#' + e.id + '.' + e.className)"""


def wider_than_the_page(page: sync_api.Page) -> list[str]:
    """What makes the page scroll sideways (wide tables scroll inside their own box instead)."""
    if page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"):
        return []
    return page.evaluate(WIDER_THAN_THE_PAGE) or ["something outside the elements"]


def start_job_from_form(
    page: sync_api.Page,
    base_url: str,
    teacher_id: str,
    seed: int,
    iterations: int = 30,
    evaluate: bool = False,
    time_limit: float | None = None,
) -> str:
    page.goto(f"{base_url}/teachers/{teacher_id}")
    form = page.locator("#job-form")
    form.get_by_label("Method", exact=True).select_option("zskt")
    # the generated form pre-fills each hyperparameter's default, with its description as help
    assert page.locator("#hp-student_steps").input_value() == "10"
    assert "student steps" in page.locator("#hp-student_steps-help").inner_text()
    form.get_by_label("Student architecture", exact=True).select_option("lenet5_half")
    form.get_by_label("Iterations", exact=True).fill(str(iterations))
    form.get_by_label("Batch size", exact=True).fill("32")
    form.get_by_label("Seed", exact=True).fill(str(seed))
    page.locator("#sample-every").fill("10")
    page.locator("#hp-student_steps").fill("2")
    page.locator("#hp-generator_width").fill("8")
    page.locator("#hp-log_every").fill("2")
    if evaluate:
        form.get_by_label("Evaluation dataset", exact=True).select_option(index=1)
        page.locator("#mte-images").fill("20")
        page.locator("#mte-steps").fill("10")
    if time_limit is not None:
        form.get_by_label("Time limit (s)", exact=True).fill(str(time_limit))
    page.get_by_role("button", name="Start job").click()
    page.wait_for_url(re.compile(r"/jobs/job_[0-9a-z]+$"))
    return page.url.rsplit("/", 1)[1]


def test_the_quickstart_through_the_pages(
    tmp_path: Path, browser: sync_api.Browser, teacher_file: Path, heldout_file: Path
) -> None:
    running, _ = serve(tmp_path, DFKD_CHECKPOINT_EVERY="20")  # a time limit acts within seconds
    shots = tmp_path / "screenshots"
    console = Console()
    for base_url in running:
        context = browser.new_context(viewport=LAPTOP, accept_downloads=True)
        page = console.watch(context.new_page())

        # a labelled set for the report, uploaded through /datasets
        page.goto(f"{base_url}/datasets")
        page.get_by_label("File (npz or safetensors: images, labels)").set_input_files(heldout_file)
        page.get_by_label("Name").fill("held-out digits")
        page.get_by_role("button", name="Upload dataset").click()
        sync_api.expect(page.locator("#dataset-result")).to_contain_text("1000 examples")
        sync_api.expect(page.locator("table")).to_contain_text("held-out digits")
        screenshot(page, shots, "datasets")

        # the teacher, through /teachers: the architecture picker comes from GET /v1/architectures
        page.goto(f"{base_url}/teachers")
        architectures = httpx.get(f"{base_url}/v1/architectures").json()["items"]
        options = page.locator("#architecture option").all_inner_texts()
        assert options == [a["name"] for a in architectures]
        page.get_by_label("Weights (safetensors)").set_input_files(teacher_file)
        page.get_by_label("Architecture", exact=True).select_option("lenet5")
        page.get_by_label("Input mean per channel").fill("[0.1307]")
        page.get_by_label("Input std per channel").fill("[0.3081]")
        page.get_by_label("Name").fill("LeNet-5 on digits")
        screenshot(page, shots, "teachers")
        page.get_by_role("button", name="Upload teacher").click()
        page.wait_for_url(re.compile(r"/teachers/tch_[0-9a-z]+$"))
        teacher_id = page.url.rsplit("/", 1)[1]
        sync_api.expect(page.locator("table.pairs")).to_contain_text("LeNet-5 on digits")

        # a bad value comes back as the API's own message
        page.locator("#hp-student_steps").fill("0")
        page.locator("#job-form").evaluate("form => form.noValidate = true")
        page.get_by_role("button", name="Start job").click()
        sync_api.expect(page.locator("#job-result")).to_contain_text("student_steps")
        screenshot(page, shots, "teacher")

        first = start_job_from_form(page, base_url, teacher_id, seed=0, evaluate=True)
        second = start_job_from_form(console.watch(context.new_page()), base_url, teacher_id, 1)
        page.goto(f"{base_url}/jobs/{first}")
        badge = page.locator(".job-header .badge")
        sync_api.expect(badge).to_have_text("succeeded", timeout=JOB_SECONDS * 1000)

        # curves of every series, drawn as SVG paths with points in them
        points = httpx.get(f"{base_url}/v1/jobs/{first}/metrics?limit=10000").json()["items"]
        names = {point["name"] for point in points}
        assert {"kl", "loss_generator", "utilisation"} <= names, names
        sync_api.expect(page.locator("#charts figure")).to_have_count(len(names))
        paths = page.locator("#charts path").evaluate_all("ps => ps.map(p => p.getAttribute('d'))")
        assert len(paths) >= len(names) - 1 and all(d.count("L") >= 2 for d in paths), paths
        page.get_by_text("wall time (s)").click()
        sync_api.expect(page.locator("#charts figure").first).to_contain_text("seconds since")

        # sample grids with a step slider: the last one shown, the first one a keypress away
        grids = httpx.get(f"{base_url}/v1/jobs/{first}/samples").json()["items"]
        assert len(grids) >= 3
        image = page.locator("#sample-grid")
        page.wait_for_function("() => document.querySelector('#sample-grid').naturalWidth > 0")
        sync_api.expect(page.locator("#sample-step-value")).to_contain_text(
            f"step {grids[-1]['step']}"
        )
        page.locator("#sample-step").focus()
        page.keyboard.press("Home")
        sync_api.expect(page.locator("#sample-step-value")).to_contain_text(
            f"step {grids[0]['step']}"
        )
        sync_api.expect(image).to_have_attribute(
            "alt", f"generator samples at step {grids[0]['step']}"
        )

        # the report: accuracies, agreement, MTE with its curves (SVG and the service's PNG)
        report = page.locator("#report")
        sync_api.expect(report).to_contain_text("student_accuracy")
        sync_api.expect(report).to_contain_text("MTE")
        assert report.locator("path").count() == 2
        page.wait_for_function("() => document.querySelector('#transition-plot').naturalWidth > 0")
        sync_api.expect(page.locator("#events")).to_contain_text("succeeded")
        sync_api.expect(page.locator("#settings-section")).to_contain_text("generator_width")
        screenshot(page, shots, "job")

        # the student, from the buttons
        saved = {}
        for fmt in ("safetensors", "onnx", "torchscript"):
            with page.expect_download() as download:
                page.locator(f"#download-{fmt}").click()
            saved[fmt] = tmp_path / download.value.suggested_filename
            download.value.save_as(saved[fmt])
        student = load_weights(build("lenet5_half"), read_state_dict(saved["safetensors"]))
        assert sum(p.numel() for p in student.parameters()) > 0
        onnx.checker.check_model(onnx.load(str(saved["onnx"])))
        assert saved["torchscript"].stat().st_size > 0

        # the same page at a phone's width
        phone = console.watch(context.new_page())
        phone.set_viewport_size(PHONE)
        phone.goto(f"{base_url}/jobs/{first}")
        sync_api.expect(phone.locator(".job-header .badge")).to_have_text("succeeded")
        phone.wait_for_function("() => document.querySelector('#sample-grid').naturalWidth > 0")
        assert wider_than_the_page(phone) == []
        screenshot(phone, shots, "job-phone")

        # the jobs list: both jobs, live progress, filters
        page.goto(f"{base_url}/")
        sync_api.expect(page.locator(f'tr[data-job="{second}"] .badge')).to_have_text(
            "succeeded", timeout=JOB_SECONDS * 1000
        )
        sync_api.expect(page.locator("tbody tr")).to_have_count(2)
        sync_api.expect(page.locator(f'tr[data-job="{first}"]')).to_contain_text(
            "LeNet-5 on digits"
        )
        page.get_by_label("Status").select_option("cancelled")
        sync_api.expect(page.locator("tbody")).to_contain_text("No jobs here yet.")
        page.get_by_label("Status").select_option("succeeded")
        sync_api.expect(page.locator("tbody tr[data-job]")).to_have_count(2)
        assert "status=succeeded" in page.url
        screenshot(page, shots, "jobs")

        # a long job, live: its curves grow while it runs, then Cancel stops it
        endless = start_job_from_form(page, base_url, teacher_id, seed=2, iterations=100_000)
        limited = start_job_from_form(
            console.watch(context.new_page()), base_url, teacher_id, 3, 100_000, time_limit=1
        )
        page.goto(f"{base_url}/jobs/{endless}")
        sync_api.expect(page.locator(".job-header .badge")).to_have_text("running", timeout=60_000)
        page.wait_for_function(
            "() => document.querySelectorAll('#charts path').length > 0", timeout=60_000
        )
        counts = "document.querySelector('#charts path').getAttribute('d').split('L').length"
        drawn = page.evaluate(counts)
        page.wait_for_function(f"() => {counts} > {drawn}", timeout=60_000)  # no reload: live
        page.get_by_role("button", name="Cancel job").click()
        sync_api.expect(page.locator(".job-header .badge")).to_have_text(
            "cancelled", timeout=60_000
        )
        sync_api.expect(page.get_by_role("button", name="Cancel job")).to_have_count(0)
        # a job that failed shows its error code and message
        page.goto(f"{base_url}/jobs/{limited}")
        sync_api.expect(page.locator(".job-header .badge")).to_have_text(
            "failed", timeout=JOB_SECONDS * 1000
        )
        sync_api.expect(page.locator("#main .error")).to_contain_text("(time_limit)")
        screenshot(page, shots, "job-failed")

        # compare: tick both, every series overlaid with one line per job
        page.goto(f"{base_url}/?status=succeeded")
        page.get_by_label(f"select {first} to compare").check()
        page.get_by_label(f"select {second} to compare").check()
        page.get_by_role("button", name="Compare selected").click()
        page.wait_for_url(re.compile(r"/compare\?jobs="))
        figures = page.locator("#charts figure")
        sync_api.expect(figures.first).to_be_visible()
        kl = figures.filter(has_text=re.compile(r"^kl"))
        sync_api.expect(kl.first.locator("path")).to_have_count(2)
        sync_api.expect(kl.first.locator(".legend li")).to_have_count(2)
        screenshot(page, shots, "compare")
        context.close()
    assert console.others() == []
    assert console.refusals() == [422]  # the bad student_steps, and nothing else


def test_a_deployment_with_keys_asks_for_one_and_shows_only_its_tenant(
    tmp_path: Path, browser: sync_api.Browser, teacher_file: Path
) -> None:
    running, env = serve(tmp_path, DFKD_REQUIRE_API_KEYS="true")
    console = Console()
    for base_url in running:
        alice, bob = create_api_key(env, "alice"), create_api_key(env, "bob")
        with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {alice}"}) as api:
            mine = upload_lenet_teacher(api, teacher_file)
        with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {bob}"}) as api:
            theirs = upload_lenet_teacher(api, teacher_file)

        context = browser.new_context(viewport=LAPTOP)
        page = console.watch(context.new_page())
        page.goto(f"{base_url}/teachers")
        dialog = page.get_by_role("dialog")
        sync_api.expect(dialog).to_be_visible()
        sync_api.expect(dialog).to_contain_text("missing_api_key")
        page.get_by_label("API key (kept for this browser session only)").fill("dfkd_wrong")
        page.keyboard.press("Enter")
        sync_api.expect(dialog).to_contain_text("the API key is unknown or revoked")
        screenshot(page, tmp_path / "screenshots", "key-prompt")
        page.get_by_label("API key (kept for this browser session only)").fill(alice)
        page.keyboard.press("Enter")
        sync_api.expect(dialog).to_be_hidden()
        sync_api.expect(page.locator("table")).to_contain_text(mine)
        assert theirs not in page.locator("table").inner_text()

        # asked once: the key holds for the browser session, on every page
        page.goto(f"{base_url}/")
        sync_api.expect(page.locator("tbody")).to_contain_text("No jobs here yet.")
        page.goto(f"{base_url}/teachers/{mine}")
        sync_api.expect(page.locator("#job-form")).to_be_visible()
        assert not dialog.is_visible()
        # another tenant's teacher is the API's 404, shown as such
        page.goto(f"{base_url}/teachers/{theirs}")
        sync_api.expect(page.locator("#main .error")).to_contain_text("not_found")
        context.close()
    assert console.others() == []
    # no key, the wrong key (each refused once, with one dialog), another tenant's teacher
    assert console.refusals() == [401, 401, 404]
