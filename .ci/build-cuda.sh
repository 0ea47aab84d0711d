#!/usr/bin/env bash
# Build `copilot-lsp --features cuda` on a machine with no CUDA toolkit and no GPU, from
# NVIDIA's PyPI wheels (CUDA 13.0, for drivers >= 580). Not part of CI.
#
#   .ci/build-cuda.sh [CUDA_DIR]     (default /tmp/cuda13; CARGO_TARGET_DIR is honoured)
#
# Output: the release binary. At run time it needs the driver's libcuda.so.1 and the CUDA 13
# libcudart/libcublas/libcublasLt/libcurand (e.g. PyTorch cu130's site-packages/nvidia/cu13/lib
# on LD_LIBRARY_PATH). Kernels: PTX for all of candle's ops, SASS for sm_${CUDA_COMPUTE_CAP:-90}
# for its quantized/MoE kernels; a GPU of another compute capability needs its own build.
set -euo pipefail
cd "$(dirname "$0")/.."
CUDA_DIR=${1:-/tmp/cuda13}
PY=${PYTHON:-python3}

if [ ! -x "$CUDA_DIR/bin/nvcc" ]; then
  whl=$(mktemp -d)
  # Pin 13.0: a newer nvcc writes PTX that a 580 driver rejects.
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$whl" \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 \
    --platform manylinux2010_x86_64 --platform manylinux_2_12_x86_64 \
    'nvidia-cuda-nvcc==13.0.88' 'nvidia-cuda-crt==13.0.88' 'nvidia-nvvm==13.0.88' \
    'nvidia-cuda-runtime==13.0.96' 'nvidia-cuda-cccl==13.0.85' 'nvidia-cuda-nvrtc==13.0.88' \
    'nvidia-cublas==13.1.0.3' 'nvidia-curand==10.4.5.25'
  unpacked=$(mktemp -d)
  for w in "$whl"/*.whl; do unzip -q -o "$w" -d "$unpacked"; done
  mkdir -p "$(dirname "$CUDA_DIR")"
  rm -rf "$CUDA_DIR"
  mv "$unpacked/nvidia/cu13" "$CUDA_DIR" # the CUDA 13 wheels share one toolkit-shaped tree
  rm -rf "$whl" "$unpacked"
  ln -s lib "$CUDA_DIR/lib64"
  (cd "$CUDA_DIR/lib" && for f in *.so.*; do b=${f%%.so.*}; [ -e "$b.so" ] || ln -s "$f" "$b.so"; done)
  # The wheels hold no libcuda.so (the driver's library): link against a stub exporting
  # every driver function cudarc declares; the real one is loaded at run time.
  cargo fetch --locked
  sys=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.10/src/driver/sys/mod.rs | head -1)
  mkdir -p "$CUDA_DIR/lib/stubs"
  grep -oE '^pub unsafe fn cu[A-Za-z0-9_]+' "$sys" | awk '{print "int " $4 "(void){return 100;}"}' |
    sort -u >"$CUDA_DIR/lib/stubs/cuda_stub.c"
  gcc -shared -fPIC -w -Wl,-soname,libcuda.so.1 -o "$CUDA_DIR/lib/stubs/libcuda.so" \
    "$CUDA_DIR/lib/stubs/cuda_stub.c"
fi

export CUDA_HOME="$CUDA_DIR" CUDA_ROOT="$CUDA_DIR" NVCC="$CUDA_DIR/bin/nvcc"
export PATH="$CUDA_DIR/bin:$PATH"
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90} # no nvidia-smi here: H100/H200
export CUDARC_CUDA_VERSION=13000
export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-$(nproc)}
nice -n 10 cargo build --release --locked -p copilot-lsp --features cuda
echo "built: ${CARGO_TARGET_DIR:-target}/release/copilot-lsp"
