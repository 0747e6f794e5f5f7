#!/usr/bin/env bash
# The trainer's CUDA path at full size on a GPU machine that cannot download anything (run from the
# repo root there). Payload prepared here: .whl/ (cp312 wheels of pydantic, pydantic-core, annotated-types,
# typing-inspection, jsonschema, jsonschema-specifications, referencing, rpds-py, dagster-pipes), .gpu/base/
# (the SmolLM2 base folder WITHOUT model.safetensors: the 98 MB GGUF is over a call's 64 MiB, so the weights
# are random, same shape: speed and the code path are real, the loss is not), .gpu/store/ (a published
# dataset artifact). Writes metrics to $OUT. Measured on an H200: README, "GPU check".
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 - <<'PY'
import torch, transformers, peft; print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)
from transformers import AutoConfig, AutoModelForCausalLM
import shutil
shutil.copytree(".gpu/base", "/tmp/base")
cfg = AutoConfig.from_pretrained("/tmp/base")
torch.manual_seed(0)
m = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
m.save_pretrained("/tmp/base")
print("random", sum(p.numel() for p in m.parameters()), "params")
PY
cp -r .gpu/store /tmp/store
T="python3 -m slm_platform.training.train_lora --domain domains/support_triage --dataset support_triage/datasets/v0002 --artifacts-root /tmp/store --base-model /tmp/base"
$T --output support_triage/adapters/g_cold --max-steps 240 save_every=0 2> $OUT/cold.err | tail -1 > $OUT/cold.json; tail -25 $OUT/cold.err
$T --output support_triage/adapters/g_warm --max-steps 60 lr=5e-4 save_every=0 --init-adapter support_triage/adapters/g_cold 2> $OUT/warm.err | tail -1 > $OUT/warm.json; tail -25 $OUT/warm.err
python3 -m slm_platform.training.train_lora --domain domains/support_triage --dataset support_triage/datasets/v0002 --artifacts-root /tmp/store --base-model /tmp/base --output support_triage/adapters/g_r8 --max-steps 1 r=8 --init-adapter support_triage/adapters/g_cold 2>&1 | tail -2
cp /tmp/store/support_triage/adapters/g_cold/metrics.json $OUT/cold_metrics.json
cp /tmp/store/support_triage/adapters/g_warm/metrics.json $OUT/warm_metrics.json
cp /tmp/store/support_triage/adapters/g_warm/manifest.json $OUT/warm_manifest.json
cat $OUT/cold.json $OUT/warm.json
