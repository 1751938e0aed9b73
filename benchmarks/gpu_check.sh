#!/usr/bin/env bash
# The checks that need a GPU, in one short run (about 8 minutes on one H200): the compatibility suite on CUDA in
# bf16, and the callbacks' overhead on a GPT of about 100M parameters. The GPU machine has torch, Lightning and
# transformers but not mup, jsonargparse or MLflow: run `bash tools/gpu_site.sh` here first and carry `.gpu` (the
# suite checks every number but the MLflow run when MLflow is absent). Logs go to $OUT (or ./gpu_check).
#
#   bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_check}
mkdir -p "$out"
export PYTHONPATH="$PWD/.gpu/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
python3 -c "import torch, lightning; print('torch', torch.__version__, torch.cuda.get_device_name(0), 'lightning', lightning.__version__)" \
  2>&1 | tee "$out/env.txt"

# 1. The compatibility suite on CUDA, bf16-mixed (every model family with all the callbacks; about 2 minutes).
LIGHTNING_SCALING_TEST_ACCELERATOR=cuda LIGHTNING_SCALING_TEST_PRECISION=bf16-mixed \
  timeout 300 python3 -m pytest -q -p no:cacheprovider tests/test_compat.py \
  -k "model_family or gpt2_stays or length_grouped or bf16" 2>&1 | tee "$out/compat.txt"

# 2. Overhead of the three callbacks on a 100M-parameter GPT, bf16-mixed (about 5 minutes).
OVERHEAD_ACCELERATOR=cuda OVERHEAD_PRECISION=bf16-mixed OVERHEAD_MODEL=100m \
  timeout 360 python3 benchmarks/overhead.py --rounds 2 --steps 30 2>&1 | tee "$out/overhead.txt"
