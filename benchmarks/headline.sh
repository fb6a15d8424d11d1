#!/usr/bin/env bash
# The headline comparisons (the targets of the README's "Targets" table) in one dtype on this machine, each suite's
# log in benchmarks/results/headline/<cpu kind>_<dtype>_<suite>.log and every row (CPU model, kind, threads, dtype
# included) appended to benchmarks/results/headline.jsonl. About 15 minutes per dtype on one core.
#   bash benchmarks/headline.sh fp32                        # on this CPU
#   bash scripts/as_avx2.sh bash benchmarks/headline.sh fp32 # as on an AVX2-only CPU (see scripts/as_avx2.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
dtype="${1:-auto}"
python="${PYTHON:-.venv/bin/python}"
kind=$(PYTHONPATH=src "$python" -c "from omni_encoders.hardware import cpu_kind; print(cpu_kind())")
out=benchmarks/results/headline
mkdir -p "$out"
run() {  # run <suite name> <script> <options...>
  local name=$1 script=$2; shift 2
  PYTHONPATH=src "$python" "benchmarks/$script" --dtype "$dtype" --json benchmarks/results/headline.jsonl "$@" \
    2>&1 | tee "$out/${kind}_${dtype}_${name}.log"
}
run vision bench_vision.py --threads 1 --repeat 2 --warmup 1
run video bench_video.py --threads 1 --repeat 1 --warmup 0
run audio bench_audio.py --threads 1 --seconds 10 --repeat 2 --warmup 1
run tts bench_audio_decoder.py --part tts --threads 2 --chars 100 --repeat 2
