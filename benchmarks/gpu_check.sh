#!/usr/bin/env bash
# Everything a lent GPU session measures, in one command that fits its ~15 minutes (run it with the device tool
# from the repository root, carrying .whl made by benchmarks/gpu_wheels.sh):
#   1. the compile tier on CUDA: every script's eager and --compile (compiled + one CUDA graph) updates agree,
#      and a compiled run stopped by SIGINT resumes exactly (tests/test_compile.py with STITCH_TEST_DEVICE=cuda);
#   2. benchmarks/speed.py --device cuda --compile: updates/s eager and compiled side by side, the issue's
#      four first (iql, cql, td3_bc, bc);
#   3. benchmarks/plan_speed.py --device cuda: tt's (cached and not) and diffuser's planning time per environment
#      step at the scripts' default sizes, one state and ten at once (an evaluation's batch);
#   4. the other scripts' speeds, each written as soon as it is measured (what the time limit leaves).
# Results land in $OUT (the device tool brings them back): commit them under benchmarks/results/.
set -uo pipefail
export PYTHONUNBUFFERED=1 MUJOCO_GL=egl
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site || exit 1
fi
OUT=${OUT:-benchmarks/results}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu_check.log"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu_check.log"
STITCH_TEST_DEVICE=cuda timeout 240 python3 -m pytest -q -x -m compile tests/test_compile.py -p no:cacheprovider \
  2>&1 | tail -30 | tee -a "$OUT/gpu_check.log"
timeout 200 python3 benchmarks/speed.py --device cuda --compile --algos iql cql td3_bc bc --steps 4000 \
  --log-every 500 --max-seconds 60 --out "$OUT/speed_cuda_compile.json" 2>&1 | tee -a "$OUT/gpu_check.log"
for spec in "tt 1" "tt 10" "diffuser 1" "diffuser 10"; do
  set -- $spec
  timeout 30 python3 benchmarks/plan_speed.py --algo $1 --episodes $2 --device cuda --steps 5 \
    --out "$OUT/plan_speed_cuda_$1_$2.json" 2>&1 | tail -1 | cut -c1-160 | tee -a "$OUT/gpu_check.log"
done
timeout 30 python3 benchmarks/plan_speed.py --algo tt --no-cache --device cuda --steps 3 \
  --out "$OUT/plan_speed_cuda_tt_1_nocache.json" 2>&1 | tail -1 | cut -c1-160 | tee -a "$OUT/gpu_check.log"
timeout 240 python3 benchmarks/speed.py --device cuda --compile --algos awr awac crr sql eql xql onestep \
  --steps 4000 --log-every 500 --max-seconds 40 --out "$OUT/speed_cuda_compile_rest.json" 2>&1 \
  | tee -a "$OUT/gpu_check.log"
