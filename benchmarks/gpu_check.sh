#!/usr/bin/env bash
# The checks and tables that need a CUDA machine, in one run of a few minutes:
#   bash benchmarks/gpu_check.sh            (from the repository root, with the project installed)
# 1. every CUDA path against its reference (the GAE backends against the float64 oracle, the
#    vector env on CUDA against the single env, the rest of the CUDA-marked tests);
# 2. GAE: the loop against the Triton kernel and the copy-bandwidth floor;
# 3. the Tic-Tac-Toe vector env's plies per second on the GPU;
# 4. data-parallel PPO with NCCL over the GPUs there are (one process per GPU, at most 2).
set -euo pipefail
export HF_HUB_OFFLINE=1
python - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device: run this on a GPU machine"
print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__)
PY
echo "== correctness on CUDA =="
python -m pytest -q tests/agents/test_gae.py tests/tictactoe/test_tictactoe_vector_env.py -k "cuda or triton or backend or device"
echo "== GAE =="
python -m benchmarks.gae_speed --device cuda --sizes 1024x4096 1024x65536 --repeats 11
echo "== Tic-Tac-Toe vector env =="
python -m benchmarks.tictactoe_env --device cuda --seconds 1 --batches 1024 65536 1048576
echo "== data-parallel PPO (NCCL) =="
gpus=$(python -c "import torch; print(min(2, torch.cuda.device_count()))")
out=$(mktemp -d)
torchrun --standalone --nproc_per_node="$gpus" -m agents.train env=tictactoe agent=ppo device=cuda \
    num_envs=1024 train.total_env_steps=200000 train.progress=false hydra.run.dir="$out/run"
python -c "import json,sys; m=json.load(open(sys.argv[1])); print({k: v for k, v in m.items() if k.startswith('perf/')})" "$out/run/metrics.json"
