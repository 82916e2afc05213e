"""Helpers of scripts/gpu-check.sh (standard library only: the GPU machine has no extra packages).

    python3 scripts/gpu_check.py subsets SRC DST N_TRAIN N_TEST   # Fashion-MNIST IDX subsets
    python3 scripts/gpu_check.py unxz SRC DST                     # xz without the xz tool
    python3 scripts/gpu_check.py undeb DEB DST                    # a .deb's files without dpkg
    python3 scripts/gpu_check.py summary WORK OUT                 # pass/fail, summary.md/.json

`summary` reads what the device run left in WORK (eval-cpu.json, eval-gpu.json, step-cpu.json,
step-gpu.json, bench.json, epoch.jsonl, env.txt), writes OUT/summary.md and OUT/summary.json,
and judges the backend agreement by the
thresholds of issue 11: per-example outcomes equal on >= 99% of images and robust accuracies
within 0.4 pp for every attack, one training step's loss within 1e-3 relative. It exits 1 when
a check fails or its inputs are missing, 0 otherwise.
"""
import gzip
import io
import json
import lzma
import os
import sys
import tarfile

AGREE_MIN = 0.99
ACC_PP_MAX = 0.4
LOSS_REL_MAX = 1e-3


def read_maybe_gz(path):
    for p in (path + ".gz", path):
        if os.path.exists(p):
            with open(p, "rb") as f:
                raw = f.read()
            return gzip.decompress(raw) if p.endswith(".gz") else raw
    raise SystemExit(f"{path}(.gz): not found; install Debian's dataset-fashion-mnist")


def subset(src, dst, prefix_images, prefix_labels, n):
    images = read_maybe_gz(os.path.join(src, prefix_images))
    labels = read_maybe_gz(os.path.join(src, prefix_labels))
    total = int.from_bytes(images[4:8], "big")
    if n > total:
        raise SystemExit(f"{prefix_images}: asked for {n} images, the file has {total}")
    rows, cols = int.from_bytes(images[8:12], "big"), int.from_bytes(images[12:16], "big")
    head_i = images[:4] + n.to_bytes(4, "big") + images[8:16]
    head_l = labels[:4] + n.to_bytes(4, "big")
    with gzip.open(os.path.join(dst, prefix_images + ".gz"), "wb") as f:
        f.write(head_i + images[16 : 16 + n * rows * cols])
    with gzip.open(os.path.join(dst, prefix_labels + ".gz"), "wb") as f:
        f.write(head_l + labels[8 : 8 + n])


def cmd_subsets(src, dst, n_train, n_test):
    os.makedirs(dst, exist_ok=True)
    subset(src, dst, "train-images-idx3-ubyte", "train-labels-idx1-ubyte", int(n_train))
    subset(src, dst, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", int(n_test))


def cmd_unxz(src, dst):
    with lzma.open(src) as f, open(dst + ".tmp", "wb") as g:
        while True:
            block = f.read(1 << 22)
            if not block:
                break
            g.write(block)
    os.chmod(dst + ".tmp", 0o755)
    os.replace(dst + ".tmp", dst)


def cmd_undeb(deb, dst):
    """A .deb is an `ar` archive holding data.tar.{xz,gz,zst}; xz and gz are read here."""
    with open(deb, "rb") as f:
        raw = f.read()
    if raw[:8] != b"!<arch>\n":
        raise SystemExit(f"{deb}: not a .deb (ar) archive")
    pos = 8
    while pos + 60 <= len(raw):
        name = raw[pos : pos + 16].decode().strip().rstrip("/")
        size = int(raw[pos + 48 : pos + 58].decode().strip())
        body = raw[pos + 60 : pos + 60 + size]
        if name.startswith("data.tar"):
            if name.endswith(".zst"):
                raise SystemExit(f"{deb}: data.tar.zst needs dpkg-deb; install dpkg")
            mode = "r:xz" if name.endswith(".xz") else "r:gz" if name.endswith(".gz") else "r:"
            with tarfile.open(fileobj=io.BytesIO(body), mode=mode) as t:
                t.extractall(dst)
            return
        pos += 60 + size + (size & 1)
    raise SystemExit(f"{deb}: no data.tar member")


def load(out, name):
    path = os.path.join(out, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        if name.endswith(".jsonl"):
            return [json.loads(line) for line in f if line.strip()]
        return json.load(f)


def agreement(cpu, gpu):
    """Rows (attack, cpu acc, gpu acc, |diff| pp, equal outcomes) and the failures."""
    rows, failures = [], []
    if cpu["example_ids"] != gpu["example_ids"]:
        failures.append("the two evaluations saw different examples")
        return rows, failures
    pairs = [("clean", cpu["clean_accuracy"], gpu["clean_accuracy"], cpu["clean"], gpu["clean"])]
    by_name = {a["name"]: a for a in gpu["attacks"]}
    for a in cpu["attacks"]:
        b = by_name.get(a["name"])
        if b is None:
            failures.append(f"{a['name']}: missing on the GPU")
            continue
        pairs.append((a["name"], a["robust_accuracy"], b["robust_accuracy"], a["robust"], b["robust"]))
    for name, acc_c, acc_g, out_c, out_g in pairs:
        equal = sum(x == y for x, y in zip(out_c, out_g)) / max(len(out_c), 1)
        diff_pp = abs(acc_c - acc_g) * 100
        rows.append((name, acc_c, acc_g, diff_pp, equal))
        if equal < AGREE_MIN:
            failures.append(f"{name}: per-example outcomes equal on {equal:.2%} < {AGREE_MIN:.0%}")
        if diff_pp > ACC_PP_MAX:
            failures.append(f"{name}: accuracies differ by {diff_pp:.2f} pp > {ACC_PP_MAX} pp")
    return rows, failures


def cmd_summary(work, out):
    lines, failures, result = [], [], {}
    env = ""
    if os.path.exists(os.path.join(work, "env.txt")):
        with open(os.path.join(work, "env.txt")) as f:
            env = f.read().strip()
    lines += ["# rslad GPU check", "", "```", env, "```", ""]

    cpu, gpu = load(work, "eval-cpu.json"), load(work, "eval-gpu.json")
    lines += ["## Backend agreement (same checkpoint, same test images)", ""]
    if cpu is None or gpu is None:
        failures.append("agreement: eval-cpu.json or eval-gpu.json missing (see log.txt)")
        lines.append("not run to the end (see log.txt)")
    else:
        rows, fails = agreement(cpu, gpu)
        failures += fails
        lines += [
            f"CPU: `{cpu['backend']}`; GPU: `{gpu['backend']}`; {len(cpu['example_ids'])} images, "
            f"eps {cpu['eps']:.4f}",
            "",
            "| attack | CPU accuracy | GPU accuracy | difference (pp) | equal outcomes | CPU s | GPU s |",
            "|---|---|---|---|---|---|---|",
        ]
        secs = {a["name"]: (a["seconds"], None) for a in cpu["attacks"]}
        for a in gpu["attacks"]:
            secs[a["name"]] = (secs.get(a["name"], (None, None))[0], a["seconds"])
        for name, acc_c, acc_g, diff, equal in rows:
            sc, sg = secs.get(name, (None, None))
            fmt = lambda v: "–" if v is None else f"{v:.1f}"  # noqa: E731
            lines.append(
                f"| {name} | {acc_c:.2%} | {acc_g:.2%} | {diff:.2f} | {equal:.2%} | {fmt(sc)} | {fmt(sg)} |"
            )
        result["agreement"] = [
            dict(attack=n, cpu=c, gpu=g, diff_pp=d, equal=e) for n, c, g, d, e in rows
        ]
    lines.append("")

    step_c, step_g = load(work, "step-cpu.json"), load(work, "step-gpu.json")
    lines += ["## One training step (natural, cnn-small, batch 128, resumed weights)", ""]
    if step_c is None or step_g is None:
        failures.append("training step: step-cpu.json or step-gpu.json missing (see log.txt)")
        lines.append("not run to the end (see log.txt)")
    else:
        lc, lg = step_c["train_loss"], step_g["train_loss"]
        rel = abs(lc - lg) / max(abs(lc), 1e-12)
        result["step_loss"] = dict(cpu=lc, gpu=lg, relative=rel)
        lines.append(f"loss CPU {lc:.6f}, GPU {lg:.6f}: relative difference {rel:.2e} (limit {LOSS_REL_MAX:.0e})")
        if not rel <= LOSS_REL_MAX:
            failures.append(f"training step: losses differ by {rel:.2e} relative > {LOSS_REL_MAX:.0e}")
    lines.append("")

    bench = load(work, "bench.json")
    lines += ["## Speed: `rslad bench` beside PyTorch eager fp32 on the same GPU", ""]
    if bench is None:
        lines.append("not run to the end (see log.txt)")
    else:
        lines += [
            f"rslad: `{bench['backend']}`",
            "",
            "| model | step | batch | rslad ms | rslad images/s | PyTorch ms | rslad/PyTorch (images/s) |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in bench["rows"]:
            pt = "–" if r.get("pytorch_ms") is None else f"{r['pytorch_ms']:.1f}"
            ratio = "–" if r.get("ratio") is None else f"{r['ratio']:.2f}"
            lines.append(
                f"| {r['model']} | {r['step']} | {r['batch']} | {r['median_ms']:.1f} | "
                f"{r['images_per_second']:.0f} | {pt} | {ratio} |"
            )
        result["bench"] = bench["rows"]
    lines.append("")

    epoch = load(work, "epoch.jsonl")
    models = {}
    if os.path.exists(os.path.join(work, "epoch-config.toml")):
        with open(os.path.join(work, "epoch-config.toml")) as f:
            for line in f:
                key, _, value = line.partition("=")
                if key.strip() in ("model", "teacher_model", "train_limit", "batch_size"):
                    models[key.strip()] = value.strip().strip('"')
    lines += [
        f"## One RSLAD epoch (student {models.get('model', '?')}, teacher "
        f"{models.get('teacher_model', '?')}, batch {models.get('batch_size', '?')}, Fashion-MNIST)",
        "",
    ]
    if not epoch:
        lines.append("not run to the end (see log.txt)")
    else:
        m = epoch[-1]
        result["rslad_epoch"] = m
        lines.append(
            f"{m['images_per_second']:.0f} images/s over the epoch ({m['seconds']:.1f} s of training); "
            f"loss {m['train_loss']:.4f}, test accuracy {m['test_accuracy']:.2%}"
        )
    lines.append("")

    verdict = "PASS" if not failures else "FAIL"
    lines += [f"## Verdict: {verdict}", ""] + [f"- {f}" for f in failures]
    result["verdict"] = verdict
    result["failures"] = failures
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(text)
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(text)
    return 0 if not failures else 1


def main(argv):
    if not argv:
        raise SystemExit(__doc__)
    cmd, args = argv[0], argv[1:]
    if cmd == "subsets" and len(args) == 4:
        return cmd_subsets(*args) or 0
    if cmd == "unxz" and len(args) == 2:
        return cmd_unxz(*args) or 0
    if cmd == "undeb" and len(args) == 2:
        return cmd_undeb(*args) or 0
    if cmd == "summary" and len(args) == 2:
        return cmd_summary(*args)
    raise SystemExit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
