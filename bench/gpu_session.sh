#!/usr/bin/env bash
# A lent GPU's checks, as one prepared run (the lease is 15 minutes, start included): the serving benchmark of
# issue 16 first, then bf16 weights, the real training recipe at full size, the training-step timing, where a
# prediction's time goes, batch prediction, and the recipe in full mode.
# Each part has its own time limit, so one that hangs or fails leaves the rest to run; outputs go to $OUT.
#
#   bash bench/gpu_session.sh                 # on the lent machine (its python3 holds torch; carry .whl)
#   STAGES="recipe steps" bash bench/gpu_session.sh   # some of: serve bf16 recipe steps breakdown batch recipe-full
#   SMOKE=1 bash bench/gpu_session.sh         # here, on the CPU with the tiny model: that the script runs
#
# The lent machine has torch but not this project's other packages: they travel as wheels in .whl (ignored by
# git, about 33 MB), installed into /tmp/site. Made here, at the lock's versions, for that machine's Python 3.12
# (the packages `bench/gpu_predict.py --http` imports that its image lacks or holds at another version):
#   pkgs="amqp annotated-types anyio billiard celery cffi click click-didyoumean click-plugins click-repl
#     cryptography defusedxml deprecated fastapi ftfy greenlet h11 httpcore2 httptools httpx2 huggingface-hub
#     ijson kombu limits opentelemetry-api pycocotools pycparser pydantic pydantic-core pydantic-settings
#     python-dotenv python-multipart redis sqlalchemy starlette transformers truststore typing-extensions
#     typing-inspection tzlocal uvicorn vine watchfiles wcwidth websockets zipstream-ng"
#   .venv/bin/python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     --platform manylinux_2_24_x86_64 -d .whl $(for p in $pkgs; do grep -i "^$p==" requirements/lock.txt; done)
set -u
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
PY=${PY:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ -d .whl ] && [ -z "${SMOKE:-}" ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site
fi
STAGES=${STAGES:-serve bf16 recipe steps breakdown batch recipe-full}
stage() { [[ " $STAGES " == *" $1 "* ]]; }
work=$(mktemp -d)
if [ -n "${SMOKE:-}" ]; then
    predict=(--device cpu --tiny --rounds 2 --batches 1,4) base=models/sam3-tiny-shapes device=cpu size=112
else
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/env.txt"
    predict=(--rounds 6) base=$work/sam3 device=cuda size=1008
fi
$PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
    | tee -a "$OUT/env.txt"

if stage serve; then
    echo "== serving: predict_many, LocalInference, the HTTP service (fp32 weights, bf16 autocast)"
    timeout 240 $PY bench/gpu_predict.py "${predict[@]}" --service --http --save-dir "$work/sam3" 2>&1 \
        | grep -v "it/s]" | tee "$OUT/predict.txt"
fi
if stage bf16; then
    echo "== serving with bf16 weights"
    timeout 75 $PY bench/gpu_predict.py "${predict[@]}" --bf16-weights 2>&1 | grep -v "it/s]" \
        | tee "$OUT/predict_bf16.txt"
fi
if stage recipe && [ -z "${SMOKE:-}" ] && [ ! -f "$work/sam3/config.json" ]; then
    timeout 60 $PY -c "import sys, torch; from transformers import Sam3Model
from trainer.architecture import full_size_sam3_config
with torch.device('cuda'): Sam3Model(full_size_sam3_config()).save_pretrained(sys.argv[1])" "$work/sam3" 2>&1 \
        | grep -v "it/s]"
fi
if stage recipe; then
    echo "== the training recipe (python -m trainer) on $base, $device"
    $PY -m trainer.synth "$work/shapes" --images 16,4,4 --size 224 > /dev/null
    cat > "$work/train.yaml" <<YAML
base_model: $base
data_dir: $work/shapes
output_dir: $work/run
device: $device
image_size: $size
epochs: 1
batch_size: 4
max_steps: 4
eval_base_model: false
progress_bar: false
log_every_steps: 1
YAML
    timeout 150 $PY -m trainer -c "$work/train.yaml" 2>&1 | tail -60 | tee "$OUT/recipe.txt"
fi
if stage steps && [ -z "${SMOKE:-}" ]; then
    echo "== training-step timing, full vs decoder"
    timeout 90 $PY bench/gpu_trainer.py --steps 3 2>&1 | tee "$OUT/trainer.txt"
fi
if stage breakdown; then
    echo "== where a prediction's time goes"
    if [ -n "${SMOKE:-}" ]; then breakdown=(--device cpu --tiny --rounds 1); else breakdown=(); fi
    timeout 90 $PY bench/gpu_breakdown.py "${breakdown[@]}" 2>&1 | grep -v "it/s]" | tee "$OUT/breakdown.txt"
fi
if stage batch; then
    echo "== batch prediction over a split: next chunk prepared meanwhile vs one step after the other"
    if [ -n "${SMOKE:-}" ]; then batch=(--device cpu --tiny); else batch=(--images 128); fi
    timeout 120 $PY bench/gpu_batch_predict.py "${batch[@]}" 2>&1 | grep -v "it/s]" | tee "$OUT/batch.txt"
fi
if stage recipe-full; then
    echo "== the training recipe in full mode (every weight trained, activations recomputed as the plan says)"
    timeout 150 $PY -m trainer -c "$work/train.yaml" mode=full max_steps=3 output_dir="$work/run-full" 2>&1 \
        | tail -40 | tee "$OUT/recipe_full.txt"
fi
rm -rf "$work"
