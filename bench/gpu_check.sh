#!/usr/bin/env bash
# TAC Studio GPU check (issue #6): the performance bench's rows on CUDA and the GPU tests, in under 9 minutes
# on one H100 or H200. Run from the repository root of a copy of the working tree on the GPU machine:
#
#     bash bench/gpu_check.sh
#
# Packages the machine lacks are installed from wheels carried in .whl/ (pip --no-index; see README,
# "Benchmarks", for the list). elpv images: the elpv-dataset package when installed, else the PNGs in
# .elpv/ (a few hundred are enough: the bench cycles them to 1,000 paths). Results in $OUT (default
# /tmp/tac-gpu-check): <step>.txt/.json/.log for the steps text, images, gpu-decode (images/s of 1024×1024
# JPEGs and small PNGs, nvJPEG decoding vs today's pipeline), tac-50k and tac-scale (free TAC at 200k and
# 1,000,000 images), and pytest.txt. Each step has its own time limit (GPU_CHECK_SECONDS, default 540, bounds
# them all), so a slow step never takes the others' time, and a stopped step still shows the rows it finished.
# GPU_CHECK_STEPS (a comma list of text, images, gpu-decode, tac-50k, tests, tac-scale, ray) runs a subset;
# "ray" (embedding on a local Ray: one process vs 1 and 2 workers on the GPU) is not in the default list and
# needs Ray installed (requirements-ray.txt).
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/tac-gpu-check}
LIMIT=${GPU_CHECK_SECONDS:-540}
STEPS=,${GPU_CHECK_STEPS:-text,images,gpu-decode,tac-50k,tests,tac-scale},
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

if [ -d .whl ]; then
  echo "== installing missing packages from .whl/"
  for pkg in torchvision open_clip_torch ftfy wcwidth regex timm safetensors huggingface_hub tqdm pandas scipy \
             scikit-learn pillow pytest pytest-timeout; do
    mod=$(echo "$pkg" | sed 's/open_clip_torch/open_clip/; s/scikit-learn/sklearn/; s/pillow/PIL/; s/-/_/g')
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

# step NAME SECONDS [MODULE] ARGS...: one bench run with its own time limit; a stopped step still shows its finished
# rows. MODULE (default bench) is the command: bench.gpu_decode and bench.distributed print their own tables.
step() {
  local name=$1 seconds=$2 module=bench; shift 2
  case ${1:-} in bench.*) module=$1; shift ;; esac
  case $STEPS in *,$name,*) ;; *) return ;; esac
  local left=$((LIMIT - SECONDS))
  [ "$seconds" -gt "$left" ] && seconds=$left
  if [ "$seconds" -lt 20 ]; then echo "== $name skipped: only $left s left"; return; fi
  echo "== $name (limit $seconds s; $SECONDS s so far)"
  timeout "$seconds" $PY -m $module --device cuda "$@" --json "$OUT/$name.json" 2> "$OUT/$name.log" | tee "$OUT/$name.txt"
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "$name stopped (rows so far below)"; grep -a "\] .*\(\[cuda\]\|images/s\|round\)" "$OUT/$name.log"; }
}

step text 60 --only text --rounds 1
if [ "$ONLY" = text,images,tac ]; then step images 60 --only images --images 1000 --rounds 1 ${IMAGE_ARGS[@]+"${IMAGE_ARGS[@]}"}; fi
if [ "$ONLY" = text,images,tac ]; then
  step gpu-decode 90 bench.gpu_decode --images 2048 --rounds 2 ${IMAGE_ARGS[@]+"${IMAGE_ARGS[@]}"}
fi
step tac-50k 150 --only tac --sizes 50000 --trained-sizes 50000 --budget 40

case $STEPS in *,tests,*)
  echo "== GPU tests ($SECONDS s so far)"
  timeout 60 $PY -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tail -15 | tee "$OUT/pytest.txt" ;;
esac

step tac-scale 200 --only tac --sizes 200000,1000000 --trained-sizes none --reference-max 200000
if $PY -c "import ray" 2>/dev/null && [ "$ONLY" = text,images,tac ]; then
  step ray 150 bench.distributed --images 2000 --rounds 1 --workers 1,2 ${IMAGE_ARGS[@]+"${IMAGE_ARGS[@]}"}
else
  case $STEPS in *,ray,*) echo "== ray skipped: Ray is not installed (or no images)";; esac
fi
echo "== done in $SECONDS s"
