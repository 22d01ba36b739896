#!/usr/bin/env bash
# On a machine with an NVIDIA GPU, jax's CUDA plugin, nvcc and cmake (and, if wanted,
# torch + torchvision): build with CUDA, run the GPU tests, time every operator against
# torchvision CUDA on the same device (every bench suite; TensorFlow is compared on the
# CPU only), and write the tables next to this script.
#   bash benchmarks/gpu.sh [out-dir]     (from the repository root)
set -euo pipefail
out=${1:-benchmarks}
# Editable, so that the commands below, run from the clone's root, import the kernels.
JAX_ROIALIGN_CUDA=ON python -m pip install --no-build-isolation -q -e ".[test]" 2>&1 | tail -n 3
python -c "import jax, jax_roialign as j; print(jax.devices(), j.kernel_platforms())"
(cd tests && python -m pytest -q -x test_gpu.py) | tee "$out/gpu_tests.txt"
{
  echo "# $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader)"
  for suite in ops pyramid rotated_crop; do
    echo "# command: python -m jax_roialign bench --suite $suite --peers jax_roialign,torchvision --layout NCHW,NHWC"
    python -m jax_roialign bench --suite $suite --peers jax_roialign,torchvision --layout NCHW,NHWC
  done
} 2>&1 | tee "$out/gpu_bench.txt"
