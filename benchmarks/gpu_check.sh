#!/usr/bin/env bash
# The checks that need a GPU, in one short run (about 10 minutes on one H200): the compatibility suite on CUDA in
# bf16, the callbacks' overhead on a GPT of about 100M parameters, and the quick sweep on 1 GPU. The GPU machine has torch, Lightning and
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

# 3. The quick demo sweep with the local executor on 1 GPU (about 2 minutes): sweep_quick.yaml's plan with every run
#    on CUDA (one worker holding the GPU: gpus_per_run 1). It needs MLflow (the sweep's state is in the run store);
#    skipped, saying so, where MLflow is absent.
if python3 -c "import mlflow" 2>/dev/null; then
  cat > "$out/sweep_gpu.yaml" <<YAML
sweep:
  family: $PWD/examples/tiny_gpt/config.yaml
  target_flops: 1e12
  budget: 3e11
  gpus_per_run: 1
  tracking_uri: sqlite:///$PWD/$out/sweep.db
  experiment: tiny-gpt-demo-quick-gpu
  folder: $PWD/$out/sweep
  overrides: [--trainer.accelerator=gpu, --data.init_args.seq_len=32, --model.init_args.seq_len=32,
              --data.init_args.batch_size=8, --data.init_args.val_windows=128]
  plugins: [examples.tiny_gpt.WidthFamily]
  plan: {first_share: 0.8, first_groups: 2, group_size: 4, min_steps: 235, bootstrap: 200}
YAML
  timeout 300 python3 -m lightning_scaling.cli sweep --config "$out/sweep_gpu.yaml" 2>&1 | tee "$out/sweep.txt"
else
  echo "quick sweep on 1 GPU: skipped: MLflow is not installed on this machine" | tee "$out/sweep.txt"
fi
