#!/bin/bash
# The CUDA checks, on a machine with an NVIDIA GPU and mtedge's GPU stack installed (README, "On a GPU"):
#   1. the tests marked gpu (each runs where the engines it names see the GPU);
#   2. the reference model exported with the GPU precisions (onnx fp16, ct2 float16 / int8_float16), every
#      precision validated against PyTorch on its own device;
#   3. the benchmark's GPU rows beside PyTorch on the GPU and CTranslate2 called directly.
# Each step logs to OUT_DIR/gpu-check.log and the next runs even if one fails.
#   PYTHON=python3 OUT_DIR=benchmarks/results/gpu-check bash benchmarks/gpu_check.sh
cd "$(dirname "$0")/.." || exit 2
PYTHON=${PYTHON:-python3}
OUT_DIR=${OUT_DIR:-benchmarks/results/tmp/gpu-check}
WORK=${WORK:-$(mktemp -d)}
DEV=${DEV:-benchmarks/corpora/data/bible/dev.tsv}
TEST=${TEST:-benchmarks/corpora/data/bible/test.tsv}
THREADS=${THREADS:-$(nproc)}
mkdir -p "$OUT_DIR"
mtedge() { "$PYTHON" -c "from mtedge.cli import main; main()" "$@"; }
step() { echo; echo "=== $1 ($(date -u +%FT%TZ))"; }
{
step "what this machine runs"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
"$PYTHON" -c "
import ctranslate2, onnxruntime as ort
print('onnxruntime', ort.__version__, ort.get_available_providers())
print('ctranslate2', ctranslate2.__version__, 'CUDA devices', ctranslate2.get_cuda_device_count(),
      sorted(ctranslate2.get_supported_compute_types('cuda')) if ctranslate2.get_cuda_device_count() else '')"
step "pytest -m gpu"
"$PYTHON" -m pytest -q -m gpu -rs tests
step "export the reference model with the GPU precisions"
mtedge export benchmarks/reference_model/model -o "$WORK/reference-gpu" --force --threads "$THREADS" \
    --onnx-precisions fp32,fp16 --ct2-precisions float32,float16,int8_float16 --validation-file "$DEV"
cp "$WORK/reference-gpu/manifest.json" "$OUT_DIR/manifest.json"
step "bench the GPU rows"
mtedge bench "$WORK/reference-gpu" --test "$TEST" --threads "$THREADS" --max-length 128 --out "$OUT_DIR" \
    --configs hf-torch-fp32,hf-torch-fp32-cuda,onnx-fp32-cuda,onnx-fp16,ct2-float32-cuda,ct2-float16,ct2-int8_float16,ct2-raw-float16 \
    --work-dir "$WORK/bench" --no-progress
step done
} 2>&1 | tee "$OUT_DIR/gpu-check.log"
