#!/usr/bin/env bash
# Here, before the device call: the Python 3.12 x86-64 wheels that bench/gpu_check.sh installs on
# the GPU machine, into .whl/ (ignored by git, carried with `carry=[".whl"]`).
#
# The GPU machine has Python 3.12 with its own CUDA build of torch and many common packages
# (numpy, onnx, onnxruntime, safetensors, matplotlib, httpx, pytest, ...), and reaches no
# registry. bench/gpu_wheels.txt pins what it lacks and the service imports: the whole closure,
# since --no-deps resolves nothing. The exact download line (the device tool's notes give it):
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#       --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       --platform manylinux1_x86_64 -d .whl -r bench/gpu_wheels.txt
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl
mkdir .whl
"${PYTHON:-python3}" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d .whl -r bench/gpu_wheels.txt
du -sh .whl
echo "$(ls .whl | wc -l) wheels in .whl/; the whole tree that travels must stay under 64 MiB"
