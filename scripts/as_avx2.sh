#!/usr/bin/env bash
# Run a command as on a CPU with AVX2 only (no AVX-512, no AMX, no native bfloat16), on a machine that has more:
# PyTorch's kernels, inductor's code generation, oneDNN, MKL and FBGEMM (quantized kernels) are all limited to AVX2.
# The omni_encoders dtype helper then picks float32, as on such a CPU. Inductor gets a cache of its own: its compiled kernels are not keyed by
# the instruction set, and AVX2 kernels left in the shared cache would be reused by later AVX-512 runs.
#   bash scripts/as_avx2.sh .venv/bin/omni-encoders tour
set -euo pipefail
export ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 FBGEMM_ENABLE_INSTRUCTIONS=AVX2
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-${TMPDIR:-/tmp}/torchinductor_avx2_$(id -u)}"
exec "$@"
