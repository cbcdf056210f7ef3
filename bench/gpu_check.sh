#!/usr/bin/env bash
# The GPU path in one call (issue 18): on a lent GPU machine, every check the service's CUDA path
# needs, with the results under $OUT; here, `--device cpu`, the same steps at toy sizes (a dry run:
# its figures are a CPU's and are never GPU results).
#
#   bash bench/gpu_check.sh --device cpu     # dry run here, at most 15 min on 2 busy cores
#   bash bench/gpu_check.sh                  # on the GPU machine (device tool), see below
#
# Steps, each bounded in time, each recorded even when one fails:
#   1. the Python environment: .venv here; on the GPU machine (Python 3.12 with its own CUDA torch,
#      no registry) a venv in /tmp over the image's packages plus the carried wheels in .whl/,
#      with a `dfkd` launcher beside its python (the service's scripts start `dfkd serve` there)
#   2. machine facts: nvidia-smi, torch, CUDA, and which imports are missing     -> machine.txt
#   3. the CUDA tests: pytest -m cuda tests/cuda (skipped with a reason on a CPU) -> pytest.txt
#   4. one job end to end through `dfkd serve` on the embedded default with DFKD_DEVICE set:
#      upload, job, poll, download, the student scored (bench/gpu_job.py)        -> job.json
#   5. bench/speed.py --device cuda: ZSKT and DFAD on WRN-40-2 -> WRN-16-1 at batch 128 and 256,
#      fp32 / bf16 / torch.compile / CUDA graphs, projected paper schedule, utilisation against
#      bf16 / TF32 / float32 matmul peaks measured there, peak memory; the student's step alone
#      (bench/speed_gpu.py), within what is left of --deadline             -> speed.json, speed.log
#   6. a summary table, printed last                                           -> summary.txt
# Everything printed also goes to check.log. At most 8 files come back from $OUT: these 7.
#
# Before the device call, here, in the repository root (the GPU machine reaches no registry):
#   bash bench/gpu_wheels.sh        # the py3.12 wheels of bench/gpu_wheels.txt into .whl/ (ignored)
# Then one device call, leaving time for one rerun inside the 15 minutes:
#   run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=360)
# and afterwards, here, the GPU section of docs/benchmarks.md from what came back:
#   .venv/bin/python bench/speed.py --render-gpu <files_at>/speed.json
set -uo pipefail

DEVICE=cuda
OUT_DIR="${OUT:-gpu-check-out}"
DEADLINE="" # seconds for the whole script (300 on a GPU, 900 on a CPU); the speed bench gets the rest
FRESH_ENV=0
STEPS="tests job speed" # a second call can run fewer: --steps speed (the compiled variants need time)
BASE_PYTHON=python3
while [ $# -gt 0 ]; do
    case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --out) OUT_DIR="$2"; shift 2 ;;
    --deadline) DEADLINE="$2"; shift 2 ;;
    --steps) STEPS="$2"; shift 2 ;;
    --fresh-env) FRESH_ENV=1; shift ;; # build the GPU machine's kind of environment here too
    --python) BASE_PYTHON="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done

# the steps' own limits: on a GPU the call must leave time for a rerun inside 15 minutes; the CPU
# dry run trains and distils toy models on two shared cores
if [[ "$DEVICE" == cuda* ]]; then
    DEADLINE="${DEADLINE:-300}" TESTS_CAP=100 JOB_CAP=120
else
    DEADLINE="${DEADLINE:-900}" TESTS_CAP=240 JOB_CAP=360
fi
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO" || exit 1
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
exec > >(tee "$OUT_DIR/check.log") 2>&1
STARTED=$SECONDS
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
declare -a SUMMARY=()

left() { echo $((DEADLINE - (SECONDS - STARTED))); }

# step NAME CAP COMMAND...: runs COMMAND under `timeout` (CAP, or less when the deadline is near)
step() {
    local name="$1" cap="$2"
    shift 2
    [[ " $STEPS " == *" $name "* ]] || return 0
    local limit
    limit=$(left)
    [ "$cap" -lt "$limit" ] && limit=$cap
    if [ "$limit" -lt 10 ]; then
        SUMMARY+=("$(printf '%-10s skipped: the deadline left %ss' "$name" "$limit")")
        return
    fi
    echo "=== $name (at most ${limit}s): $*"
    local began=$SECONDS status
    timeout --kill-after=10 "$limit" "$@"
    status=$?
    local verdict=ok
    [ $status -ne 0 ] && verdict="FAILED (exit $status)"
    [ $status -eq 124 ] && verdict="TIMED OUT after ${limit}s"
    SUMMARY+=("$(printf '%-10s %-26s %4ss' "$name" "$verdict" $((SECONDS - began)))")
}

# --- 1. the Python environment
make_env() {
    local env=/tmp/dfkd-env site
    rm -rf "$env"
    "$BASE_PYTHON" -m venv --without-pip "$env" || return 1
    site="$("$env/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    # the image's own packages (torch with CUDA, numpy, onnx, ...) after the carried wheels,
    # and the repository itself, as an editable install would put it
    "$BASE_PYTHON" -c 'import site, sys; print("\n".join(p for p in site.getsitepackages() + sys.path if p.endswith("-packages")))' \
        >"$site/image-packages.pth"
    echo "$REPO" >"$site/dfkd-repository.pth"
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$BASE_PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --disable-pip-version-check --target "$site" .whl/*.whl || return 1
    else
        echo "no wheels in .whl/: only the image's packages (bash bench/gpu_wheels.sh adds them)"
    fi
    # the guard: the embedded runner's spawned children import this script as their main module
    printf '#!%s\nimport sys\nfrom cli.main import main\nif __name__ == "__main__":\n    sys.exit(main())\n' \
        "$env/bin/python" >"$env/bin/dfkd"
    chmod +x "$env/bin/dfkd"
    PY="$env/bin/python"
}

if [ "$FRESH_ENV" = 1 ] || [ ! -x .venv/bin/python ]; then
    make_env || { echo "could not build the environment"; exit 1; }
else
    PY="$REPO/.venv/bin/python"
fi
echo "python: $PY ($("$PY" --version 2>&1))"

# --- 2. machine facts, and the imports the service needs
{
    date -u '+%Y-%m-%d %H:%M UTC'
    uname -a
    nproc
    command -v nvidia-smi >/dev/null && nvidia-smi
    "$PY" - <<'EOF'
import importlib
import torch

print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(), "bf16", torch.cuda.is_bf16_supported())
needed = [
    "fastapi", "starlette", "pydantic", "pydantic_settings", "uvicorn", "multipart", "sqlalchemy",
    "alembic", "psycopg", "celery", "redis", "minio", "fastapi_offline", "prometheus_client",
    "httpx", "matplotlib", "onnx", "onnxruntime", "safetensors", "mlxtend", "pytest",
    "pytest_timeout", "PIL", "numpy", "tqdm",
]
missing = []
for name in needed:
    try:
        importlib.import_module(name)
    except Exception as error:
        missing.append(f"{name} ({type(error).__name__}: {error})")
print("missing imports:", ", ".join(missing) or "none")
import api.main, worker.job, cli.main  # noqa: E401,F401  the service itself imports
print("the service imports")
EOF
} 2>&1 | tee "$OUT_DIR/machine.txt"

# --- 3..5 the checks; toy sizes on a CPU
if [[ "$DEVICE" == cuda* ]]; then
    JOB_ARGS=(--iterations 400)
    SPEED_ARGS=()
else
    # one thread: on a shared 2-core machine two OpenMP threads per process ran a WRN step 13x
    # slower than one (spinning at barriers while other processes held the cores)
    export OMP_NUM_THREADS=1 DFKD_TORCH_THREADS=1
    JOB_ARGS=(--iterations 20 --teacher-epochs 1 --mte-images 10 --mte-steps 5)
    SPEED_ARGS=(--gpu-path --tiny --gpu-batch-sizes 8 16 --gpu-iterations 2 --peak-size 256
        --gpu-variants fp32 bf16 --step-repeats 2)
fi

step tests "$TESTS_CAP" bash -c "'$PY' -m pytest tests/cuda -m cuda -q -rA -p no:cacheprovider \
    --timeout 90 2>&1 | tee '$OUT_DIR/pytest.txt'"
step job "$JOB_CAP" "$PY" bench/gpu_job.py --device "$DEVICE" --out "$OUT_DIR/job.json" "${JOB_ARGS[@]}"
# the speed bench's own budget ends 25 s before the step's limit: its JSON is saved as it goes
SPEED_BUDGET=$(($(left) - 25))
step speed 600 bash -c "'$PY' bench/speed.py --device '$DEVICE' --no-write \
    --json-out '$OUT_DIR/speed.json' --budget-seconds $SPEED_BUDGET ${SPEED_ARGS[*]} \
    2>&1 | tee '$OUT_DIR/speed.log'"

# --- 6. the summary, last (the device tool returns the end of the output)
{
    echo
    echo "=== gpu_check on $DEVICE, $(date -u '+%Y-%m-%d %H:%M UTC'), $((SECONDS - STARTED)) s"
    printf '%s\n' "${SUMMARY[@]}"
    grep -h "missing imports" "$OUT_DIR/machine.txt"
    [ -f "$OUT_DIR/pytest.txt" ] && echo "tests: $(tail -n 1 "$OUT_DIR/pytest.txt")"
    [ -f "$OUT_DIR/job.json" ] && "$PY" -c "
import json, sys
job = json.load(open(sys.argv[1]))
keys = ('status', 'teacher_accuracy', 'student_accuracy', 'seconds_to_end', 'error')
print('job:', {k: job.get(k) for k in keys}, 'utilisation', (job.get('progress') or {}).get('utilisation'))
" "$OUT_DIR/job.json"
    [ -f "$OUT_DIR/speed.json" ] && "$PY" bench/speed.py --render-gpu "$OUT_DIR/speed.json" --no-write
} 2>&1 | tee "$OUT_DIR/summary.txt"
