#!/usr/bin/env bash
# The README's walkthrough as one script, against a running `make run` (http://127.0.0.1:8000):
# train a LeNet-5 teacher on real digits, upload it, distil it data-free, download and score the student.
set -euo pipefail
cd "$(dirname "$0")/.."
API=${DFKD_API:-http://127.0.0.1:8000}
PY=.venv/bin/python
OUT=${OUT:-quickstart}

$PY examples/train_mnist_teacher.py --out-dir "$OUT"

teacher=$(curl -sf -F file=@"$OUT/teacher.safetensors" -F architecture=lenet5 \
  -F 'input_mean=[0.1307]' -F 'input_std=[0.3081]' "$API/v1/teachers")
teacher_id=$($PY -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$teacher")
echo "teacher: $teacher_id"

started=$(date +%s)
job=$(curl -sf -X POST "$API/v1/jobs" -H 'content-type: application/json' -d "{
  \"teacher_id\": \"$teacher_id\", \"method\": \"zskt\",
  \"student\": {\"architecture\": \"lenet5_half\"},
  \"iterations\": 300, \"batch_size\": 128, \"seed\": 0,
  \"hyperparameters\": {\"generator_width\": 32}}")
job_id=$($PY -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$job")
echo "job: $job_id"

while true; do
  state=$(curl -sf "$API/v1/jobs/$job_id")
  read -r status line < <($PY -c '
import json, sys
job = json.load(sys.stdin)
p = job["progress"]
print(job["status"], "%d/%d eta=%.0fs" % (p["iteration"], p["total"], p["eta_seconds"] or 0), job["error"] or "")' <<<"$state")
  echo "$status $line"
  case $status in succeeded) break ;; failed|cancelled) exit 1 ;; esac
  sleep 5
done
echo "wall time: $(( $(date +%s) - started )) s"

curl -sf -o "$OUT/student.safetensors" "$API/v1/jobs/$job_id/student"
$PY examples/evaluate_student.py "$OUT/student.safetensors" "$OUT/heldout.npz" --architecture lenet5_half
