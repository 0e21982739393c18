#!/usr/bin/env bash
# One call on a lent GPU machine (the `device` tool), from the repository root: the CUDA tests, then training
# data generated on the CPU cores while ARNet variants train on the GPU, until BUDGET seconds have passed.
# Checkpoints and logs land in $OUT (arnet_<variant>.pt, logs.tgz, cuda_tests.log). Each variant resumes from
# training/checkpoints/arnet_layered_recovered_latest.pt. Environment: OUT, BUDGET (s), NGEN (generator
# processes), DEVICE (cuda or cpu, for a local dry run), STEPS_SCALE (1; smaller for a dry run).
set -u
OUT=${OUT:-runs/device_out}; BUDGET=${BUDGET:-470}; NGEN=${NGEN:-11}; DEVICE=${DEVICE:-cuda}; PY=${PY:-python3}
SIZE=${SIZE:-128}; BATCH=${BATCH:-24}; CROP=${CROP:-112}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 PYTHONWARNINGS=ignore
T0=$(date +%s)
D=runs/dev
mkdir -p "$OUT" $D/train $D/test
elapsed() { echo $(( $(date +%s) - T0 )); }
(nvidia-smi -L; $PY -c "import torch, numba, numpy; print('torch', torch.__version__, 'numba', numba.__version__, \
'numpy', numpy.__version__, 'cuda', torch.cuda.is_available())") 2>&1 | tee "$OUT/env.log"

# validation shards: the same seeds as runs/data19/test on the development machine
for w in 0 1 2; do
  $PY training/make_dataset.py --out $D/test --shards 3 --base-seed 90000000 --size "$SIZE" --workers 3 \
      --worker $w > $D/gen_test_$w.log 2>&1 &
done
# training shards: seeds no development run has used
for w in $(seq 0 $((NGEN - 1))); do
  nice -n 5 $PY training/make_dataset.py --out $D/train --shards 100000 --base-seed 50000000 --size "$SIZE" \
      --workers "$NGEN" --worker "$w" > $D/gen_$w.log 2>&1 &
done
if [ "$DEVICE" = cuda ]; then
  BOKEHME_SHARED=$PWD/shared timeout 240 $PY -m pytest -q -p no:cacheprovider -rs \
    tests/core/test_scatter.py::test_cuda_matches_cpu tests/core/test_pipeline.py::test_cuda_matches_cpu \
    tests/core/test_lens.py::test_cuda_lens_matches_cpu tests/training/test_training_scripts.py::test_training_runs_on_cuda \
    tests/nodes/test_comfy.py::test_gpu_memory_released_after_runs > "$OUT/cuda_tests.log" 2>&1 &
fi
while [ "$(ls $D/test/shard_*.npz 2>/dev/null | wc -l)" -lt 3 ] || [ "$(ls $D/train/shard_*.npz 2>/dev/null | wc -l)" -lt 2 ]; do
  sleep 2; [ "$(elapsed)" -gt 120 ] && { echo "no data after 120 s"; tail -5 $D/gen_*.log; break; }
done
echo "data ready at $(elapsed) s"

# variant: name, BCE weight, learning rate
TRAINERS=()
for v in "a 0.1 1e-4" "b 0.02 1e-4" "c 0.02 3e-4"; do
  set -- $v
  mkdir -p $D/$1 && cp training/checkpoints/arnet_layered_recovered_latest.pt $D/$1/latest.pt
  $PY training/train_arnet.py --data $D/train --val-data $D/test --run $D/$1 --width 64 --lr "$3" --bce-weight "$2" \
      --classical layered_recovered --gate --batch "$BATCH" --crop "$CROP" --device "$DEVICE" --threads 1 \
      --val-every 1000 --ckpt-every 250 --steps 100000000 > $D/train_$1.log 2>&1 &
  TRAINERS+=($!)
done
while [ "$(elapsed)" -lt "$BUDGET" ]; do sleep 5; done
kill "${TRAINERS[@]}" 2>/dev/null; sleep 2
pkill -f make_dataset.py; wait 2>/dev/null
echo "stopped at $(elapsed) s; shards: $(ls $D/train | wc -l)"
for v in a b c; do cp $D/$v/latest.pt "$OUT/arnet_$v.pt" 2>/dev/null; tail -2 $D/$v/log.csv; done
tar czf "$OUT/logs.tgz" $D/*.log $D/*/log.csv 2>/dev/null
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv 2>/dev/null
echo "done at $(elapsed) s"
