"""The torchattacks side of `rslad bench`'s AutoAttack rows: torchattacks' standard AutoAttack
components (APGD-CE, APGD-T, FAB-T, Square) run in order, each on the points every earlier one
left correctly classified (as torchattacks' MultiAttack does), on the weights rslad exported
(`rslad export --format torch`) and the images rslad attacked.

    python3 bench/torchattacks_aa.py --model cnn-small --weights W.safetensors \
        --inputs X.bin --n 100 --eps 0.1 --threads 2 [--steps 100] [--queries 5000]

`--steps` sets the iterations of APGD, APGD-T and FAB (torchattacks' own default is 10, the
reference AutoAttack's standard version uses 100; rslad uses 100). Prints one JSON object:
{"clean": correct, "seconds": total, "components": [{"name", "attacked", "seconds", "robust"}]}.
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "python"))
import reference_models as R  # noqa: E402


def build(name, channels):
    if name == "cnn-small":
        return R.CnnSmall(10)
    if name == "resnet18":
        return R.ResNet(R.BasicBlock, [2, 2, 2, 2], 10, channels=channels)
    raise SystemExit(f"torchattacks_aa.py: no reference definition for {name}")




def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--inputs", required=True, help="f32 images [n,c,h,w] then i64 labels [n], little-endian")
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--shape", default="1,28,28")
    ap.add_argument("--eps", type=float, required=True)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--queries", type=int, default=5000)
    a = ap.parse_args()
    import torchattacks

    torch.set_num_threads(a.threads)
    c, h, w = (int(v) for v in a.shape.split(","))
    raw = open(a.inputs, "rb").read()
    count = a.n * c * h * w
    x = torch.frombuffer(bytearray(raw[: 4 * count]), dtype=torch.float32).reshape(a.n, c, h, w).clone()
    y = torch.frombuffer(bytearray(raw[4 * count : 4 * count + 8 * a.n]), dtype=torch.int64).clone()
    model = build(a.model, c)
    model.load_state_dict(R.load_safetensors(a.weights), strict=True)
    model.eval()
    comps = [
        ("APGD-CE", torchattacks.APGD(model, eps=a.eps, steps=a.steps, n_restarts=1, loss="ce", seed=0)),
        ("APGD-T", torchattacks.APGDT(model, eps=a.eps, steps=a.steps, n_restarts=1, n_classes=10, seed=0)),
        ("FAB-T", torchattacks.FAB(model, eps=a.eps, steps=a.steps, n_restarts=1, multi_targeted=True, n_classes=10, seed=0)),
        ("Square", torchattacks.Square(model, eps=a.eps, n_queries=a.queries, n_restarts=1, seed=0)),
    ]
    t_all = time.perf_counter()
    with torch.no_grad():
        alive = (model(x).argmax(1) == y).nonzero().flatten()
    clean = len(alive)
    out = []
    for name, attack in comps:
        attacked = len(alive)
        t0 = time.perf_counter()
        if attacked > 0:
            adv = attack(x[alive], y[alive])
            with torch.no_grad():
                still = model(adv).argmax(1) == y[alive]
            alive = alive[still]
        out.append({"name": name, "attacked": attacked, "seconds": time.perf_counter() - t0, "robust": len(alive)})
    print(json.dumps({"clean": clean, "seconds": time.perf_counter() - t_all, "components": out}))


if __name__ == "__main__":
    main()
