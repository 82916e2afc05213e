"""The PyTorch side of `rslad bench`: the same training steps, attack step and eval forward as
rslad, written the way the official codes write them (RSLAD rslad_loss.py, TRADES trades.py,
ARD main.py, IAD IAD-I.py), on the same architecture, batch and thread count.

    python3 bench/pytorch_bench.py --model resnet18 --batch 32 --threads 2 --reps 5
    python3 bench/pytorch_bench.py --model resnet18 --batch 128 --device cuda

prints one JSON object: step name -> median milliseconds (plus "_convs", the model's distinct
convolutions, each also timed alone as a step, "_device" and, on CUDA,
"_cudnn_tf32": PyTorch's defaults are kept, so fp32 eager convolutions may use TF32 there).
On CUDA every timed step is bracketed by torch.cuda.synchronize(), so the time covers the
GPU work and not just its launch.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "python"))
import reference_models as R  # noqa: E402


class CnnLarge(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        cfg = [(1, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 2), (128, 128, 1)]
        self.features = nn.Sequential(*[R.ConvBnRelu(a, b, s) for a, b, s in cfg])
        self.linear = nn.Linear(128 * 7 * 7, num_classes)

    def forward(self, x):
        out = self.features(x)
        return self.linear(out.reshape(out.size(0), -1))


def build(name):
    if name == "cnn-small":
        return R.CnnSmall(10), (1, 28, 28), 0.1
    if name == "cnn-large":
        return CnnLarge(10), (1, 28, 28), 0.1
    if name == "resnet18":
        return R.ResNet(R.BasicBlock, [2, 2, 2, 2], 10), (3, 32, 32), 8 / 255
    if name == "resnet50":
        return R.ResNet(R.Bottleneck, [3, 4, 6, 3], 10), (3, 32, 32), 8 / 255
    if name == "mobilenetv2":
        return R.MobileNetV2(10), (3, 32, 32), 8 / 255
    if name.startswith("wrn-"):
        d, w = name.split("-")[1:3]
        return R.WideResNet(int(d), 10, int(w)), (3, 32, 32), 8 / 255
    raise SystemExit(f"unknown model {name}")


def pgd(model, x, loss_fn, start, eps, step, steps):
    x_adv = start
    for _ in range(steps):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss = loss_fn(model(x_adv))
        grad = torch.autograd.grad(loss, [x_adv])[0]
        x_adv = x_adv.detach() + step * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0.0, 1.0)
    return x_adv.detach()


def kl_loss(a, b):
    return -a * b + torch.log(b + 1e-5) * b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    a = ap.parse_args()
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {a.device}: this torch sees no CUDA device")
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    student, shape, eps = build(a.model)
    teacher, _, _ = build(a.model)
    student.to(dev)
    teacher.to(dev)
    teacher.eval()
    step = eps / 4
    opt = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9, weight_decay=2e-4)
    x = torch.rand(a.batch, *shape, device=dev)
    y = torch.randint(0, 10, (a.batch,), device=dev)
    ce = nn.CrossEntropyLoss()
    kl_sum = nn.KLDivLoss(reduction="sum")

    def natural():
        student.train()
        opt.zero_grad()
        ce(student(x), y).backward()
        opt.step()

    def sat():
        student.eval()
        start = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
        x_adv = pgd(student, x, lambda z: F.cross_entropy(z, y, reduction="sum"), start, eps, step, 10)
        student.train()
        opt.zero_grad()
        ce(student(x_adv), y).backward()
        opt.step()

    def trades():
        student.eval()
        with torch.no_grad():
            p_nat = F.softmax(student(x), dim=1)
        x_adv = pgd(student, x, lambda z: kl_sum(F.log_softmax(z, dim=1), p_nat), x + 0.001 * torch.randn_like(x), eps, step, 10)
        student.train()
        opt.zero_grad()
        logits = student(x)
        loss = F.cross_entropy(logits, y) + 6.0 * (1.0 / len(x)) * kl_sum(F.log_softmax(student(x_adv), dim=1), F.softmax(logits, dim=1))
        loss.backward()
        opt.step()

    def ard():
        student.train()  # ARD attacks the student in training mode
        with torch.no_grad():
            t = teacher(x)
        x_adv = pgd(student, x, lambda z: F.cross_entropy(z, y, reduction="sum"), x + torch.empty_like(x).uniform_(-eps, eps), eps, step, 10)
        opt.zero_grad()
        loss = 30.0 * 30.0 * nn.KLDivLoss()(F.log_softmax(student(x_adv) / 30.0, dim=1), F.softmax(t / 30.0, dim=1))
        loss.backward()
        opt.step()

    def iad():
        student.train()
        with torch.no_grad():
            t = teacher(x)
        x_adv = pgd(student, x, lambda z: F.cross_entropy(z, y, reduction="sum"), x + torch.empty_like(x).uniform_(-eps, eps), eps, step, 10)
        opt.zero_grad()
        adv = student(x_adv)
        nat = student(x)
        with torch.no_grad():
            trust = F.softmax(teacher(x_adv), dim=1).gather(1, y.view(-1, 1)).squeeze() ** 0.1
        kl_t = (F.softmax(t, dim=1) * (F.log_softmax(t, dim=1) - F.log_softmax(adv, dim=1))).sum(1).mean()
        kl_s = ((F.softmax(nat, dim=1) * (F.log_softmax(nat, dim=1) - F.log_softmax(adv, dim=1))).sum(1) * (1 - trust)).mean()
        (kl_t + kl_s).backward()
        opt.step()

    def rslad():
        student.train()
        with torch.no_grad():
            t = teacher(x)
        student.eval()
        x_adv = pgd(student, x, lambda z: kl_sum(F.log_softmax(z, dim=1), F.softmax(t, dim=1)), x + 0.001 * torch.randn_like(x), eps, step, 10)
        student.train()
        opt.zero_grad()
        adv = student(x_adv)
        nat = student(x)
        loss = 5 / 6 * kl_loss(F.log_softmax(adv, dim=1), F.softmax(t, dim=1)).mean() + 1 / 6 * kl_loss(F.log_softmax(nat, dim=1), F.softmax(t, dim=1)).mean()
        loss.backward()
        opt.step()

    def attack_step():
        student.eval()
        pgd(student, x, lambda z: F.cross_entropy(z, y, reduction="sum"), x.clone(), eps, step, 1)

    def eval_forward():
        student.eval()
        with torch.no_grad():
            student(x)

    def conv_shapes(model):
        """Each distinct convolution of `model` with the input size it sees (one forward pass)."""
        found, hooks = [], []
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                def hook(mod, inp, _out):
                    _, c, h, w = inp[0].shape
                    k = {"in_channels": c, "out_channels": mod.out_channels, "height": h, "width": w,
                         "kernel": mod.kernel_size[0], "stride": mod.stride[0],
                         "padding": mod.padding[0], "groups": mod.groups}
                    if k not in found:
                        found.append(k)
                hooks.append(m.register_forward_hook(hook))
        model.eval()
        with torch.no_grad():
            model(x[:1])
        for h in hooks:
            h.remove()
        return found

    def label(c):
        k = c["kernel"]
        g = f" g{c['groups']}" if c["groups"] > 1 else ""
        return f"conv {k}x{k} {c['in_channels']}->{c['out_channels']} @{c['height']}x{c['width']} s{c['stride']}{g}"

    def conv_steps(c):
        """The convolution alone: forward, and forward with input and weight gradients."""
        conv = nn.Conv2d(c["in_channels"], c["out_channels"], c["kernel"], c["stride"],
                         c["padding"], groups=c["groups"], bias=False).to(dev)
        xc = torch.rand(a.batch, c["in_channels"], c["height"], c["width"], device=dev)
        xg = xc.clone().requires_grad_()

        def forward():
            with torch.no_grad():
                conv(xc)

        def both():
            conv.zero_grad()
            xg.grad = None
            conv(xg).sum().backward()

        return {label(c): forward, label(c) + " fwd+bwd": both}

    convs = conv_shapes(student)
    steps = {
        "train natural": natural, "train sat": sat, "train trades": trades, "train ard": ard,
        "train iad": iad, "train rslad": rslad, "attack step": attack_step, "eval forward": eval_forward,
    }
    for c in convs:
        steps.update(conv_steps(c))
    def sync():
        if cuda:
            torch.cuda.synchronize(dev)

    out = {}
    for name, fn in steps.items():
        fn()  # warm-up
        times = []
        for _ in range(a.reps):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(1000 * (time.perf_counter() - t0))
        out[name] = statistics.median(times)
    out["_device"] = torch.cuda.get_device_name(dev) if cuda else "cpu"
    out["_convs"] = convs
    if cuda:
        out["_cudnn_tf32"] = torch.backends.cudnn.allow_tf32
    print(json.dumps(out))


if __name__ == "__main__":
    main()
