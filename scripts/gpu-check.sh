#!/usr/bin/env bash
# The GPU check of issue 11, in two halves.
#
#   scripts/gpu-check.sh --prepare     here, on the development machine (Rust, Fashion-MNIST,
#                                      package registries): fills gpu-check/ (ignored, < 64 MiB)
#   scripts/gpu-check.sh               on the GPU machine (NVIDIA driver and PyTorch, no Rust,
#                                      no network), from the repository root; writes into $OUT
#
# --prepare builds: the first 10,000 training and 500 test images of Fashion-MNIST as IDX files
# (gpu-check/data); a cnn-small trained for one epoch with PGD adversarial training (SAT) on
# them with the flex build, the checkpoint both backends are attacked through
# (gpu-check/cnn-small-sat.safetensors); a one-epoch natural run on 128 images whose second
# epoch is the compared training step (gpu-check/step-run); the flex release binary and the
# vulkan release binary (`--no-default-features --features vulkan`, target dir
# target/check-vulkan, the first build takes over an hour on 2 cores), both stripped and
# xz-compressed; Debian's libvulkan1 .deb (apt-get download). Steps whose output exists are
# skipped, so an interrupted --prepare continues.
#
# The device run (well under 8 minutes on one H100/H200 when Vulkan comes up):
#   1. backend agreement: the same checkpoint and the same 500 test images attacked with fgsm,
#      pgd-sat, pgd-trades, cw and apgd-ce by the vulkan binary and by the flex binary:
#      per-example outcomes equal on >= 99% of images, robust accuracies within 0.4 pp;
#      one natural training step (resumed weights, batch 128): losses within 1e-3 relative;
#   2. `rslad bench --model resnet18 --batch-size 128` on the GPU, with bench/pytorch_bench.py
#      on the same GPU (`--device cuda`) beside it, ratio per row;
#   3. one RSLAD epoch on the 10,000 images (student resnet18, teacher the cnn-small above;
#      the teacher's logits are one forward pass per batch), images/s.
# It writes $OUT/summary.md (the tables and PASS/FAIL), summary.json, log.txt, eval-cpu.json,
# eval-gpu.json, bench.json and epoch.jsonl, and exits 1 when an agreement check fails.
#
# The one device call (the workplace's `run` tool; gpu-check/ travels in `carry`):
#   command:   bash scripts/gpu-check.sh
#   carry:     ["gpu-check"]
#   timeout_s: 540
#
# Without a GPU: GPU_CHECK_CPU=1 runs both halves on tiny sizes with the flex binary standing
# in for the vulkan one (RSLAD_DEVICE=cpu on both sides), to test this script itself:
#   GPU_CHECK_CPU=1 scripts/gpu-check.sh --prepare && GPU_CHECK_CPU=1 OUT=/tmp/gc scripts/gpu-check.sh
# It uses gpu-check-cpu/ instead of gpu-check/. Knobs: GPU_CHECK_DIR, FASHION_MNIST (source of
# the IDX files, default /usr/share/datasets/fashion-mnist), GPU_CHECK_NO_VULKAN=1 (--prepare all
# but the vulkan binary, which a later --prepare adds), GPU_CHECK_BUDGET (seconds, default 480).
set -euo pipefail
cd "$(dirname "$0")/.."

CPU_TEST=${GPU_CHECK_CPU:-0}
if [ "$CPU_TEST" = 1 ]; then
  GC=${GPU_CHECK_DIR:-gpu-check-cpu}
  N_TRAIN=512 N_TEST=64 BENCH_MODEL=cnn-small BENCH_BATCH=32 BENCH_REPS=1 EPOCH_MODEL=cnn-small
else
  GC=${GPU_CHECK_DIR:-gpu-check}
  N_TRAIN=10000 N_TEST=500 BENCH_MODEL=resnet18 BENCH_BATCH=128 BENCH_REPS=5 EPOCH_MODEL=resnet18
fi
ATTACKS=fgsm,pgd-sat,pgd-trades,cw,apgd-ce
FASHION_MNIST=${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
HELPER=scripts/gpu_check.py

say() { echo "==> $*"; }

prepare() {
  mkdir -p "$GC"
  if [ ! -e "$GC/data/t10k-labels-idx1-ubyte.gz" ]; then
    say "Fashion-MNIST subsets: $N_TRAIN training, $N_TEST test images"
    python3 "$HELPER" subsets "$FASHION_MNIST" "$GC/data.tmp" "$N_TRAIN" "$N_TEST"
    rm -rf "$GC/data" && mv "$GC/data.tmp" "$GC/data"
  fi

  say "flex release build"
  cargo build --release --quiet
  local flex=target/release/rslad
  if [ ! -e "$GC/rslad-flex.xz" ] || [ "$flex" -nt "$GC/rslad-flex.xz" ]; then
    objcopy --strip-all "$flex" "$GC/rslad-flex.tmp"
    xz -6 -T0 -c "$GC/rslad-flex.tmp" > "$GC/rslad-flex.xz.tmp"
    rm "$GC/rslad-flex.tmp" && mv "$GC/rslad-flex.xz.tmp" "$GC/rslad-flex.xz"
  fi

  if [ ! -e "$GC/cnn-small-sat.safetensors" ]; then
    say "cnn-small, one epoch of SAT on $N_TRAIN images (flex)"
    rm -rf "$GC/sat-run"
    "$flex" train --method sat --model cnn-small --dataset fashion-mnist --data-dir "$GC/data" \
      --epochs 1 --batch-size 128 --lr 0.05 --milestones none --monitor-examples 0 \
      --out "$GC/sat-run" >/dev/null
    cp "$GC/sat-run/last.safetensors" "$GC/cnn-small-sat.safetensors"
    rm -rf "$GC/sat-run"
  fi

  if [ ! -e "$GC/step-run/metrics.jsonl" ]; then
    say "the training step's starting point: one natural epoch on 128 images (flex)"
    rm -rf "$GC/step-run"
    "$flex" train --method natural --model cnn-small --dataset fashion-mnist --data-dir "$GC/data" \
      --train-limit 128 --epochs 1 --batch-size 128 --lr 0.05 --milestones none \
      --monitor-examples 0 --out "$GC/step-run" >/dev/null
  fi

  if [ "$CPU_TEST" != 1 ] && [ "${GPU_CHECK_NO_VULKAN:-0}" != 1 ] && [ ! -e "$GC/rslad-vulkan.xz" ]; then
    say "vulkan release build (target/check-vulkan; the first one takes over an hour on 2 cores)"
    CARGO_TARGET_DIR=target/check-vulkan cargo build --release --quiet --no-default-features --features vulkan
    objcopy --strip-all target/check-vulkan/release/rslad "$GC/rslad-vulkan.tmp"
    xz -6 -T0 -c "$GC/rslad-vulkan.tmp" > "$GC/rslad-vulkan.xz.tmp"
    rm "$GC/rslad-vulkan.tmp" && mv "$GC/rslad-vulkan.xz.tmp" "$GC/rslad-vulkan.xz"
  fi

  if ! ls "$GC"/libvulkan1_*.deb >/dev/null 2>&1; then
    say "Debian's libvulkan1 (the Vulkan loader) for the GPU machine"
    (cd "$GC" && apt-get download libvulkan1) ||
      echo "warning: apt-get download libvulkan1 failed; the GPU machine must have libvulkan.so.1" >&2
  fi

  local size
  size=$(du -sb "$GC" | cut -f1)
  say "$GC holds $((size / 1024 / 1024)) MiB (the whole working tree that travels must stay under 64 MiB)"
  if [ "$size" -gt $((60 * 1024 * 1024)) ]; then
    echo "error: $GC is over 60 MiB; the device call would not fit" >&2
    exit 1
  fi
}

# One stage, bounded in time, its output in the log; a failed stage leaves its file missing and
# the summary says so.
# Every limit is cut to what is left of BUDGET seconds, so the summary is written before the
# device call's own timeout.
BUDGET=${GPU_CHECK_BUDGET:-480}
stage() {
  local limit=$1 name=$2
  shift 2
  local left=$((BUDGET - SECONDS))
  if [ "$left" -lt "$limit" ]; then limit=$left; fi
  say "$name"
  if [ "$limit" -le 0 ]; then
    echo "    $name: SKIPPED, the ${BUDGET}s budget is spent"
    return
  fi
  local t0=$SECONDS
  if timeout "$limit" "$@"; then
    echo "    $name: ${SECONDS}s total, $((SECONDS - t0))s for this stage"
  else
    echo "    $name: FAILED or over ${limit}s (exit $?)"
  fi
}

device() {
  : "${OUT:?set OUT to the folder the results go to}"
  mkdir -p "$OUT"
  [ -d "$GC" ] || { echo "error: $GC/ is missing: run scripts/gpu-check.sh --prepare first and carry it" >&2; exit 1; }
  if [ "$CPU_TEST" != 1 ] && [ ! -e "$GC/rslad-vulkan.xz" ]; then
    echo "error: $GC/rslad-vulkan.xz is missing: run scripts/gpu-check.sh --prepare (without GPU_CHECK_NO_VULKAN) first" >&2
    exit 1
  fi
  local work=${TMPDIR:-/tmp}/rslad-gpu-check
  rm -rf "$work" && mkdir -p "$work"
  exec > >(tee "$OUT/log.txt") 2>&1

  python3 "$HELPER" unxz "$GC/rslad-flex.xz" "$work/rslad-flex"
  local cpu=("env" "RSLAD_DEVICE=cpu" "$work/rslad-flex")
  local gpu
  if [ "$CPU_TEST" = 1 ]; then
    gpu=("env" "RSLAD_DEVICE=cpu" "$work/rslad-flex")
  else
    python3 "$HELPER" unxz "$GC/rslad-vulkan.xz" "$work/rslad-vulkan"
    gpu=("env" "RSLAD_DEVICE=gpu" "$work/rslad-vulkan")
    if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1 '; then
      local deb
      deb=$(ls "$GC"/libvulkan1_*.deb 2>/dev/null | head -1 || true)
      if [ -n "$deb" ]; then
        if command -v dpkg-deb >/dev/null; then dpkg-deb -x "$deb" "$work/vk"; else python3 "$HELPER" undeb "$deb" "$work/vk"; fi
        export LD_LIBRARY_PATH="$work/vk/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
      fi
    fi
    # The NVIDIA Vulkan driver's manifest, where the container keeps it outside the usual places.
    if ! ls /usr/share/vulkan/icd.d/nvidia_icd*.json /etc/vulkan/icd.d/nvidia_icd*.json >/dev/null 2>&1 &&
      [ -e /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
      export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    fi
  fi

  {
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo none)"
    echo "cpu cores: $(nproc)"
    echo "vulkan: loader $(ldconfig -p 2>/dev/null | grep -c 'libvulkan.so.1 ') in ldconfig, LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}, VK_DRIVER_FILES=${VK_DRIVER_FILES:-}, manifests: $(ls /usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/nvidia/share/vulkan/icd.d 2>/dev/null | grep json | tr '\n' ' ')"
    echo "torch: $(python3 -c 'import torch;print(torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())' 2>&1 | tail -1)"
    echo "rslad (CPU side): $("${cpu[@]}" --version 2>&1 | tail -1)"
    echo "rslad (GPU side): $("${gpu[@]}" --version 2>&1 | tail -1)"
  } > "$work/env.txt"
  cat "$work/env.txt"

  local eval_args=(eval --checkpoint "$GC/cnn-small-sat.safetensors" --dataset fashion-mnist
    --data-dir "$GC/data" --attacks "$ATTACKS" --n-examples "$N_TEST" --no-sanity)
  stage 120 "agreement: attacks on the GPU" "${gpu[@]}" "${eval_args[@]}" --json "$work/eval-gpu.json"
  stage 90 "agreement: attacks on flex" "${cpu[@]}" "${eval_args[@]}" --json "$work/eval-cpu.json"

  for side in cpu gpu; do
    local bin
    if [ $side = cpu ]; then bin=("${cpu[@]}"); else bin=("${gpu[@]}"); fi
    rm -rf "$work/step-$side" && cp -r "$GC/step-run" "$work/step-$side"
    stage 45 "one training step on $side" "${bin[@]}" train --resume "$work/step-$side" --epochs 2
    if tail -1 "$work/step-$side/metrics.jsonl" | grep -q '"epoch":2'; then
      tail -1 "$work/step-$side/metrics.jsonl" > "$work/step-$side.json"
    fi
  done

  stage 150 "rslad bench ($BENCH_MODEL, batch $BENCH_BATCH) with PyTorch beside it" \
    "${gpu[@]}" bench --model "$BENCH_MODEL" --batch-size "$BENCH_BATCH" --reps "$BENCH_REPS" --json "$work/bench.json"

  stage 150 "one RSLAD epoch ($EPOCH_MODEL student) on $N_TRAIN images" \
    "${gpu[@]}" train --method rslad --model "$EPOCH_MODEL" --teacher "$GC/cnn-small-sat.safetensors" \
    --teacher-model cnn-small --dataset fashion-mnist --data-dir "$GC/data" --epochs 1 \
    --batch-size 128 --milestones none --monitor-examples 0 --out "$work/epoch-run"
  if [ -e "$work/epoch-run/metrics.jsonl" ]; then
    cp "$work/epoch-run/metrics.jsonl" "$work/epoch.jsonl"
    cp "$work/epoch-run/config.toml" "$work/epoch-config.toml"
  fi

  for f in eval-cpu.json eval-gpu.json bench.json epoch.jsonl; do
    if [ -e "$work/$f" ]; then cp "$work/$f" "$OUT/$f"; fi
  done
  python3 "$HELPER" summary "$work" "$OUT"
}

case "${1:-}" in
  --prepare) prepare ;;
  "") device ;;
  *) echo "usage: scripts/gpu-check.sh [--prepare]  (see the header of this file)" >&2; exit 2 ;;
esac
