"""PyTorch reference definitions of rslad's architectures, for the interop tests.

Written from the published definitions (the RSLAD code's cifar10_models, TRADES'
wideresnet.py, RobustBench's dm_wide_resnet.py); rslad never imports this at run time.

    python3 reference_models.py OUT_DIR

writes, per case, CASE.pt (a state dict in one of the forms users meet) and CASE.io.pt
(inputs and the eval-mode logits), which tests/interop.rs imports and compares.
"""
import json
import struct
import sys
import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, 4 * planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(4 * planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != 4 * planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, 4 * planes, 1, stride, bias=False), nn.BatchNorm2d(4 * planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, block, num_blocks, num_classes=10, channels=3):
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(channels, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(block, 64, num_blocks[0], 1)
        self.layer2 = self._make_layer(block, 128, num_blocks[1], 2)
        self.layer3 = self._make_layer(block, 256, num_blocks[2], 2)
        self.layer4 = self._make_layer(block, 512, num_blocks[3], 2)
        self.linear = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block, planes, n, stride):
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(block(self.in_planes, planes, s))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.avg_pool2d(out, 4)
        return self.linear(out.view(out.size(0), -1))


class MBlock(nn.Module):
    def __init__(self, in_planes, out_planes, expansion, stride):
        super().__init__()
        self.stride = stride
        planes = expansion * in_planes
        self.conv1 = nn.Conv2d(in_planes, planes, 1, 1, 0, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, groups=planes, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, 1, 0, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride == 1 and in_planes != out_planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, 1, 0, bias=False), nn.BatchNorm2d(out_planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + self.shortcut(x) if self.stride == 1 else out


class MobileNetV2(nn.Module):
    cfg = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]

    def __init__(self, num_classes=10, channels=3):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 32, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        layers, in_planes = [], 32
        for expansion, out_planes, n, stride in self.cfg:
            for s in [stride] + [1] * (n - 1):
                layers.append(MBlock(in_planes, out_planes, expansion, s))
                in_planes = out_planes
        self.layers = nn.Sequential(*layers)
        self.conv2 = nn.Conv2d(320, 1280, 1, 1, 0, bias=False)
        self.bn2 = nn.BatchNorm2d(1280)
        self.linear = nn.Linear(1280, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = F.relu(self.bn2(self.conv2(out)))
        out = F.avg_pool2d(out, 4)
        return self.linear(out.view(out.size(0), -1))


class WBlock(nn.Module):
    def __init__(self, in_planes, out_planes, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.equalInOut = in_planes == out_planes
        self.convShortcut = (not self.equalInOut) and nn.Conv2d(in_planes, out_planes, 1, stride, 0, bias=False) or None

    def forward(self, x):
        if not self.equalInOut:
            x = self.relu1(self.bn1(x))
        else:
            out = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(out if self.equalInOut else x)))
        out = self.conv2(out)
        return torch.add(x if self.equalInOut else self.convShortcut(x), out)


class NetworkBlock(nn.Module):
    def __init__(self, n, in_planes, out_planes, stride):
        super().__init__()
        self.layer = nn.Sequential(*[WBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1) for i in range(n)])

    def forward(self, x):
        return self.layer(x)


class WideResNet(nn.Module):
    """TRADES models/wideresnet.py, with its unused sub_block1."""

    def __init__(self, depth=34, num_classes=10, widen_factor=10, channels=3):
        super().__init__()
        c = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(channels, c[0], 3, 1, 1, bias=False)
        self.block1 = NetworkBlock(n, c[0], c[1], 1)
        self.sub_block1 = NetworkBlock(n, c[0], c[1], 1)
        self.block2 = NetworkBlock(n, c[1], c[2], 2)
        self.block3 = NetworkBlock(n, c[2], c[3], 2)
        self.bn1 = nn.BatchNorm2d(c[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(c[3], num_classes)
        self.nChannels = c[3]

    def forward(self, x):
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        out = F.avg_pool2d(out, 8)
        return self.fc(out.view(-1, self.nChannels))


class Swish(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


class DMBlock(nn.Module):
    def __init__(self, in_planes, out_planes, stride, act):
        super().__init__()
        self.batchnorm_0 = nn.BatchNorm2d(in_planes, momentum=0.01)
        self.relu_0 = act()
        self.conv_0 = nn.Conv2d(in_planes, out_planes, 3, stride, 0, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(out_planes, momentum=0.01)
        self.relu_1 = act()
        self.conv_1 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.has_shortcut = in_planes != out_planes
        self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride, 0, bias=False) if self.has_shortcut else None
        self._stride = stride

    def forward(self, x):
        if self.has_shortcut:
            x = self.relu_0(self.batchnorm_0(x))
        else:
            out = self.relu_0(self.batchnorm_0(x))
        v = x if self.has_shortcut else out
        v = F.pad(v, (1, 1, 1, 1)) if self._stride == 1 else F.pad(v, (0, 1, 0, 1))
        out = self.conv_0(v)
        out = self.relu_1(self.batchnorm_1(out))
        out = self.conv_1(out)
        return torch.add(self.shortcut(x) if self.has_shortcut else x, out)


class DMGroup(nn.Module):
    def __init__(self, n, in_planes, out_planes, stride, act):
        super().__init__()
        self.block = nn.Sequential(*[DMBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, act) for i in range(n)])

    def forward(self, x):
        return self.block(x)


class DMWideResNet(nn.Module):
    """RobustBench dm_wide_resnet.py (Gowal et al. 2020), mean/std as buffers."""

    def __init__(self, num_classes=100, depth=70, width=16, act=Swish, mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762)):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))
        c = [16, 16 * width, 32 * width, 64 * width]
        n = (depth - 4) // 6
        self.init_conv = nn.Conv2d(3, c[0], 3, 1, 1, bias=False)
        self.layer = nn.Sequential(DMGroup(n, c[0], c[1], 1, act), DMGroup(n, c[1], c[2], 2, act), DMGroup(n, c[2], c[3], 2, act))
        self.batchnorm = nn.BatchNorm2d(c[3], momentum=0.01)
        self.relu = act()
        self.logits = nn.Linear(c[3], num_classes)
        self.num_channels = c[3]

    def forward(self, x):
        out = (x - self.mean) / self.std
        out = self.layer(self.init_conv(out))
        out = self.relu(self.batchnorm(out))
        out = F.avg_pool2d(out, 8)
        return self.logits(out.view(-1, self.num_channels))


class ConvBnRelu(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class CnnSmall(nn.Module):
    """rslad's cnn-small, mirrored."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(ConvBnRelu(1, 32, 1), ConvBnRelu(32, 64, 2), ConvBnRelu(64, 128, 2))
        self.linear = nn.Linear(128 * 7 * 7, num_classes)

    def forward(self, x):
        out = self.features(x)
        return self.linear(out.reshape(out.size(0), -1))


def randomise_batchnorm(model, gen):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.uniform_(-0.2, 0.2, generator=gen)
                m.running_mean.uniform_(-0.2, 0.2, generator=gen)
                m.running_var.uniform_(0.5, 1.5, generator=gen)


# (case, rslad model name, constructor, input shape, how the state dict is saved)
CASES = [
    ("resnet18", "resnet18", lambda: ResNet(BasicBlock, [2, 2, 2, 2], 10), (3, 32, 32), "plain"),
    ("resnet50", "resnet50", lambda: ResNet(Bottleneck, [3, 4, 6, 3], 10), (3, 32, 32), "dataparallel"),
    ("mobilenetv2", "mobilenetv2", lambda: MobileNetV2(100), (3, 32, 32), "plain"),
    ("wrn-16-4", "wrn-16-4", lambda: WideResNet(16, 10, 4), (3, 32, 32), "legacy"),
    ("wrn-16-2-dm", "wrn-16-2-dm", lambda: DMWideResNet(100, 16, 2), (3, 32, 32), "plain"),
    ("cnn-small", "cnn-small", lambda: CnnSmall(10), (1, 28, 28), "plain"),
]


def main(out):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    for case, _, make, shape, form in CASES:
        model = make()
        randomise_batchnorm(model, gen)
        model.eval()
        x = torch.rand(4, *shape, generator=gen)
        with torch.no_grad():
            logits = model(x)
        sd = model.state_dict()
        path = f"{out}/{case}.pt"
        if form == "dataparallel":
            torch.save({"state_dict": nn.DataParallel(model).state_dict(), "epoch": 7}, path)
        elif form == "legacy":
            torch.save(sd, path, _use_new_zipfile_serialization=False)
        else:
            torch.save(sd, path)
        torch.save({"x": x, "logits": logits}, f"{out}/{case}.io.pt")
    # The reverse direction: load rslad exports with strict=True and run them.
    print("ok")


def load_safetensors(path):
    """A safetensors file (F32/I64 tensors) as a state dict, with the standard library only."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        blob = f.read()
    sd = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        dtype = {"F32": torch.float32, "I64": torch.int64}[v["dtype"]]
        sd[k] = torch.frombuffer(bytearray(blob[a:b]), dtype=dtype).reshape(v["shape"]).clone()
    return sd


def check_exports(out):
    """Loads rslad's exports (CASE.export.safetensors) strictly and writes their logits."""
    for case, _, make, shape, _ in CASES:
        path = f"{out}/{case}.export.safetensors"
        sd = load_safetensors(path)
        model = make()
        model.load_state_dict(sd, strict=True)
        model.eval()
        io = torch.load(f"{out}/{case}.io.pt")
        with torch.no_grad():
            logits = model(io["x"])
        torch.save({"logits": logits}, f"{out}/{case}.export-logits.pt")
    print("ok")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[2] == "check-exports":
        check_exports(sys.argv[1])
    else:
        main(sys.argv[1])
