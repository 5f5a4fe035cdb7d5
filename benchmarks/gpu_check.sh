#!/usr/bin/env bash
# GPU checks of the resident data path (docs/benchmarks.md), for one session with one H100/H200.
# Results, the log and nvidia-smi's report go to $OUT (at most 8 files).
#
#   bash benchmarks/gpu_check.sh [throughput|epoch|all]     (default: all)
#
# throughput (~5 min): train_throughput.py at ML-100k, bf16-mixed, compile off/on x resident off/on:
#   wdrec vs plain loop vs the resident ceiling, data-wait fraction, GPU utilisation.
#   -> $OUT/train_throughput.json
# epoch (setup ~5-10 min, then the epoch, capped by EPOCH_MAX_TIME): one epoch over synthetic
#   100M interactions (1M users, 200k items; ~35 GB of host memory at 10M ~ 3.2 GB), resident.
#   -> $OUT/epoch_100m.json
# The device tool gives one command 10 minutes: run the two stages as two commands.
#
# The GPU host has torch, lightning, pandas, pyarrow and scikit-learn, not mlflow or fastapi
# (the training job runs without them: no tracking, no registry) and not jsonargparse, which
# LightningCLI needs. Prepare once, in the repo root of the checkout the device tool sends:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl \
#       jsonargparse==4.53.0 docstring_parser==0.18.0 typeshed_client==2.15.0
#   mkdir -p data && cp -r ~/.cache/wdrec/movielens-100k data/    # data/ is git-ignored; never commit it
# and call the device tool with carry [".whl", "data"] and, e.g.,
#   command "bash benchmarks/gpu_check.sh throughput", timeout_s 600.
#
# GPU_CHECK_SMOKE=1 runs every step at tiny sizes on whatever device there is, with mlflow and
# fastapi made unimportable as on the GPU host: the script's own test (tests/test_gpu_check.py).
set -euo pipefail
: "${OUT:?set OUT to the folder for the results}"
stage=${1:-all}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1
python=${PYTHON:-python3}

if [[ -n "${GPU_CHECK_SMOKE:-}" ]]; then
  shim=$(mktemp -d)
  for missing in mlflow fastapi; do
    mkdir "$shim/$missing"
    echo "raise ImportError('$missing is not installed on the GPU host')" > "$shim/$missing/__init__.py"
  done
  export PYTHONPATH="$shim:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
  throughput=(--steps 8 --warmup 2 --precision bf16-mixed --compile off --resident off on)
  epoch=(--users 2000 --items 1000 --interactions 20000 --batch-size 4000 --warmup 2 --max-time 00:00:01:00)
else
  if [[ -d .whl ]]; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  "$python" -m pip install -q --no-deps --no-build-isolation -e . || export PYTHONPATH="$PWD/src:$PYTHONPATH"
  if [[ -z "${WDREC_DATA_DIR:-}" && -d data/movielens-100k ]]; then export WDREC_DATA_DIR=$PWD/data; fi
  nvidia-smi > "$OUT/nvidia-smi.txt"
  throughput=(--config configs/movielens100k.yaml --config configs/gpu.yaml --precision bf16-mixed
              --compile off on --resident off on)
  # A larger batch than gpu.yaml's 8192 for the scale epoch: ~7.5k steps instead of ~60k.
  epoch=(--config configs/synthetic.yaml --config configs/gpu.yaml --users 1000000 --items 200000
         --interactions 100000000 --batch-size "${EPOCH_BATCH:-65536}" --max-time "${EPOCH_MAX_TIME:-00:00:04:00}")
fi
"$python" -c "import torch, wdrec.job; print('wdrec', wdrec.__file__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"

if [[ $stage == throughput || $stage == all ]]; then
  echo "== throughput $(date -u +%T)"
  "$python" benchmarks/train_throughput.py --json "$OUT/train_throughput.json" "${throughput[@]}"
fi
if [[ $stage == epoch || $stage == all ]]; then
  echo "== epoch $(date -u +%T)"
  "$python" benchmarks/epoch_time.py --json "$OUT/epoch_100m.json" --precision bf16-mixed --resident on "${epoch[@]}"
fi
echo "== done $(date -u +%T)"
