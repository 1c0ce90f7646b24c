#!/usr/bin/env bash
# TAC Studio GPU check (issue #6): the performance bench's rows on CUDA and the GPU tests, in under 4 minutes
# on one H100. Run from the repository root of a copy of the working tree on the GPU machine:
#
#     bash bench/gpu_check.sh
#
# Packages the machine lacks are installed from wheels carried in .whl/ (pip --no-index; see README,
# "Benchmarks", for the list). elpv images: the elpv-dataset package when installed, else the PNGs in
# .elpv/ (a few hundred are enough: the bench cycles them to 1,000 paths). Results in $OUT (default
# /tmp/tac-gpu-check): bench.txt/.json/.log (phase 1), pytest.txt, bench-scale.txt/.json/.log (phase 2).
# Phase 2 (free TAC at 200k and 1,000,000 images) runs with the time left; each step has its own timeout,
# so a slow step never takes the others' time, and a stopped phase still shows the rows it finished.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/tac-gpu-check}
LIMIT=${GPU_CHECK_SECONDS:-235}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

if [ -d .whl ]; then
  echo "== installing missing packages from .whl/"
  for pkg in torchvision open_clip_torch ftfy wcwidth regex timm safetensors huggingface_hub tqdm pandas scipy \
             scikit-learn pillow pytest pytest-timeout elpv-dataset; do
    mod=$(echo "$pkg" | sed 's/open_clip_torch/open_clip/; s/scikit-learn/sklearn/; s/pillow/PIL/;
                             s/pytest-timeout/pytest_timeout/; s/elpv-dataset/elpv_dataset/; s/-/_/g')
    $PY -c "import $mod" 2>/dev/null || $PY -m pip install --no-index --find-links .whl --quiet \
        --disable-pip-version-check "$pkg" 2>&1 | tail -2
  done
fi
$PY - <<'EOF'
import torch
print("torch", torch.__version__, "CUDA", torch.version.cuda, "device", torch.cuda.get_device_name(0))
EOF

IMAGE_ARGS=()
if ! $PY -c "import elpv_dataset" 2>/dev/null; then
  if [ -d .elpv ]; then IMAGE_ARGS=(--image-dir .elpv); else echo "no elpv images: skipping the image row"; fi
fi
ONLY=text,images,tac
if [ ${#IMAGE_ARGS[@]} -eq 0 ] && ! $PY -c "import elpv_dataset" 2>/dev/null; then ONLY=text,tac; fi

echo "== phase 1: text, images, TAC free and trained at 50k on CUDA ($SECONDS s so far)"
timeout $((LIMIT - 110 - SECONDS > 60 ? LIMIT - 110 - SECONDS : 60)) $PY -m bench --device cuda --only "$ONLY" \
    --sizes 50000 --trained-sizes 50000 --images 1000 --rounds 1 ${IMAGE_ARGS[@]+"${IMAGE_ARGS[@]}"} \
    --json "$OUT/bench.json" 2> "$OUT/bench.log" | tee "$OUT/bench.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "phase 1 stopped (rows so far below)"; grep -a "\] .*\[cuda\]" "$OUT/bench.log"; }

echo "== GPU tests ($SECONDS s so far)"
timeout $((LIMIT - 75 - SECONDS > 25 ? LIMIT - 75 - SECONDS : 25)) $PY -m pytest -q -p no:cacheprovider \
    tests/test_gpu.py 2>&1 | tail -15 | tee "$OUT/pytest.txt"

LEFT=$((LIMIT - SECONDS))
if [ "$LEFT" -ge 40 ]; then
  echo "== phase 2: TAC free at 200k (with the reference) and 1,000,000 images (engine only) ($LEFT s left)"
  timeout "$LEFT" $PY -m bench --device cuda --only tac --sizes 200000,1000000 --trained-sizes none \
      --reference-max 200000 --json "$OUT/bench-scale.json" 2> "$OUT/bench-scale.log" | tee "$OUT/bench-scale.txt"
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "phase 2 stopped (rows so far below)"; grep -a "\] .*\[cuda\]" "$OUT/bench-scale.log"; }
else
  echo "== phase 2 (200k, 1,000,000 images) skipped: only $LEFT s left"
fi
echo "== done in $SECONDS s"
