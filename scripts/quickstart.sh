#!/usr/bin/env bash
# rslad's main job at CPU scale on real data (Fashion-MNIST): train a robust teacher (cnn-large,
# PGD adversarial training), distill a smaller student (cnn-small) from it with RSLAD, attack
# both with the paper's attack set (FGSM, PGD_SAT, PGD_TRADES, CW-inf, AutoAttack), print the
# table.
#
# Knobs (environment): OUT (default runs/quickstart), TRAIN_LIMIT (training images, default
# 3000), EPOCHS (default 3), N_EVAL (test images attacked, default 100). AutoAttack dominates
# the time (thousands of forward passes per robust image): raise N_EVAL for tighter numbers.
# Running it again continues a killed run and skips what is finished.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-runs/quickstart}
TRAIN_LIMIT=${TRAIN_LIMIT:-3000}
EPOCHS=${EPOCHS:-3}
N_EVAL=${N_EVAL:-100}
DATA=/usr/share/datasets/fashion-mnist

if [ ! -e "$DATA/train-images-idx3-ubyte.gz" ] && [ ! -e "$DATA/train-images-idx3-ubyte" ]; then
  echo "==> Fashion-MNIST is missing: installing Debian's dataset-fashion-mnist"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y dataset-fashion-mnist
fi
if ! command -v cargo >/dev/null; then
  echo "cargo is not installed: install Rust with https://rustup.rs (rustup), then run this again" >&2
  exit 1
fi

echo "==> Building rslad (release; the first build takes a few minutes)"
cargo build --release --quiet
RSLAD=target/release/rslad
mkdir -p "$OUT"
start=$(date +%s)

cat > "$OUT/quickstart.toml" <<TOML
# Written by scripts/quickstart.sh
dataset = "fashion-mnist"
data_dir = "$DATA"
train_limit = $TRAIN_LIMIT
test_limit = 2000
epochs = $EPOCHS
eps = 0.1
batch_size = 64
lr = 0.05
milestones = []
monitor_examples = 300
attacks = "paper"
eval_examples = $N_EVAL
eval_last = false
eps_sweep = 0

[teacher]
model = "cnn-large"
method = "sat"

[[student]]
model = "cnn-small"
methods = ["rslad:batchmean"]
TOML

echo "==> Teacher (cnn-large, SAT), then student (cnn-small, RSLAD), each attacked on $N_EVAL test images"
$RSLAD experiment --config "$OUT/quickstart.toml" --out "$OUT"
$RSLAD report "$OUT" > /dev/null
echo
cat "$OUT/report.md"
echo
echo "==> Done in $(( $(date +%s) - start )) s (build excluded). Everything is in $OUT/ (report.md, results.csv, cells/*/)."
cat <<TXT

The paper's full-size run (CIFAR-10, ResNet-18 student, TRADES WideResNet-34-10 teacher,
300 epochs; a GPU machine is advised), after downloading CIFAR-10 (binary version) and the
TRADES checkpoint model_cifar_wrn.pt:
  $RSLAD import --from model_cifar_wrn.pt --model wrn-34-10 --layout trades --dataset cifar10 \\
      --out teachers/wrn-34-10-trades.safetensors --verify-dataset cifar10 --data-dir data/cifar-10-batches-bin
  $RSLAD experiment --config experiments/cifar10-paper.toml
  $RSLAD report runs/cifar10-paper
TXT
