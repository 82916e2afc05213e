"""Reference robust accuracies for tests/parity.rs: the field's implementations of rslad's
attacks (torchattacks 3.5.1; a CW-margin PGD on torchattacks' PGD) run on an rslad checkpoint
exported with `rslad export --format torch`, on the first N Fashion-MNIST test images.

Usage: attack_parity.py EXPORT.safetensors FASHION_MNIST_DIR N EPS
Prints one JSON object: {"torchattacks": VERSION, "clean": ACC, "FGSM": ACC, ...}, accuracies
in [0, 1]. rslad never imports this at run time.
"""

import gzip
import json
import os
import struct
import sys

import torch
import torch.nn.functional as F
import torchattacks

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reference_models import CnnSmall, load_safetensors  # noqa: E402




def read_idx(directory, name):
    for path in (os.path.join(directory, name + ".gz"), os.path.join(directory, name)):
        if os.path.exists(path):
            opener = gzip.open if path.endswith(".gz") else open
            with opener(path, "rb") as f:
                data = f.read()
            ndim = data[3]
            dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
            body = torch.frombuffer(bytearray(data[4 + 4 * ndim :]), dtype=torch.uint8)
            return body.reshape(dims)
    raise FileNotFoundError(f"{name}(.gz) not in {directory}")


class MarginPGD(torchattacks.PGD):
    """CW-inf: PGD on -max(z_y - max_{i!=y} z_i + kappa, 0), summed (docs/spec/attacks.md)."""

    def __init__(self, model, eps, alpha, steps, kappa):
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
        self.kappa = kappa

    def forward(self, images, labels):
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        adv = images + torch.empty_like(images).uniform_(-self.eps, self.eps)
        adv = torch.clamp(adv, 0, 1).detach()
        onehot = F.one_hot(labels, 10).bool()
        for _ in range(self.steps):
            adv.requires_grad = True
            z = self.get_logits(adv)
            true = z[onehot]
            other = z.masked_fill(onehot, float("-inf")).max(dim=1).values
            cost = -torch.clamp(true - other + self.kappa, min=0).sum()
            grad = torch.autograd.grad(cost, adv)[0]
            adv = adv.detach() + self.alpha * grad.sign()
            delta = torch.clamp(adv - images, min=-self.eps, max=self.eps)
            adv = torch.clamp(images + delta, 0, 1).detach()
        return adv


def main(export, data_dir, n, eps):
    torch.manual_seed(0)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    model = CnnSmall(10)
    model.load_state_dict(load_safetensors(export), strict=True)
    model.eval()
    x = read_idx(data_dir, "t10k-images-idx3-ubyte")[:n].float().div(255).unsqueeze(1)
    y = read_idx(data_dir, "t10k-labels-idx1-ubyte")[:n].long()

    def accuracy(images):
        with torch.no_grad():
            return (model(images).argmax(1) == y).float().mean().item()

    step_trades = 0.003 * eps / (8 / 255)
    attacks = {
        "FGSM": torchattacks.FGSM(model, eps=eps),
        "PGD_SAT": torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=20, random_start=True),
        "PGD_TRADES": torchattacks.PGD(
            model, eps=eps, alpha=step_trades, steps=20, random_start=True
        ),
        "CW": MarginPGD(model, eps=eps, alpha=eps / 4, steps=20, kappa=50.0),
        "APGD-CE": torchattacks.APGD(
            model, norm="Linf", eps=eps, steps=100, n_restarts=1, loss="ce", seed=0
        ),
    }
    out = {"torchattacks": torchattacks.__version__, "clean": accuracy(x)}
    for name, attack in attacks.items():
        adv = attack(x, y)
        assert (adv - x).abs().max().item() <= eps + 1e-6, name
        out[name] = accuracy(adv)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
