//! CIFAR ResNet-18 and ResNet-50 (the kuangliu definitions used by the RSLAD code:
//! `cifar10_models/resnet.py`): a 3×3 stem without max-pooling, four stages, linear head.

use super::layers::{bn, conv1x1, conv3x3, conv_forward, global_avg_pool, relu, ConvBn};
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Linear, LinearConfig};
use burn::prelude::*;

/// conv3×3 → BN → ReLU → conv3×3 → BN, plus shortcut, then ReLU.
#[derive(Module, Debug)]
pub struct BasicBlock {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub conv2: Conv2d,
    pub bn2: BatchNorm,
    pub shortcut: Option<ConvBn>,
}

impl BasicBlock {
    pub const EXPANSION: usize = 1;

    fn new(device: &Device, in_planes: usize, planes: usize, stride: usize) -> Self {
        BasicBlock {
            conv1: conv3x3(device, in_planes, planes, stride),
            bn1: bn(device, planes),
            conv2: conv3x3(device, planes, planes, 1),
            bn2: bn(device, planes),
            shortcut: (stride != 1 || in_planes != planes)
                .then(|| ConvBn::new(device, in_planes, planes, stride)),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let out = relu(self.bn1.forward(conv_forward(&self.conv1, x.clone())));
        let out = self.bn2.forward(conv_forward(&self.conv2, out));
        let short = match &self.shortcut {
            Some(s) => s.forward(x),
            None => x,
        };
        relu(out + short)
    }
}

/// 1×1 → 3×3 (stride s) → 1×1 with 4× expansion, each followed by BN; plus shortcut, ReLU.
#[derive(Module, Debug)]
pub struct Bottleneck {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub conv2: Conv2d,
    pub bn2: BatchNorm,
    pub conv3: Conv2d,
    pub bn3: BatchNorm,
    pub shortcut: Option<ConvBn>,
}

impl Bottleneck {
    pub const EXPANSION: usize = 4;

    fn new(device: &Device, in_planes: usize, planes: usize, stride: usize) -> Self {
        let out = planes * Self::EXPANSION;
        Bottleneck {
            conv1: conv1x1(device, in_planes, planes, 1),
            bn1: bn(device, planes),
            conv2: conv3x3(device, planes, planes, stride),
            bn2: bn(device, planes),
            conv3: conv1x1(device, planes, out, 1),
            bn3: bn(device, out),
            shortcut: (stride != 1 || in_planes != out)
                .then(|| ConvBn::new(device, in_planes, out, stride)),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let out = relu(self.bn1.forward(conv_forward(&self.conv1, x.clone())));
        let out = relu(self.bn2.forward(conv_forward(&self.conv2, out)));
        let out = self.bn3.forward(conv_forward(&self.conv3, out));
        let short = match &self.shortcut {
            Some(s) => s.forward(x),
            None => x,
        };
        relu(out + short)
    }
}

#[allow(clippy::large_enum_variant)] // see models::Network
#[derive(Module, Debug)]
pub enum ResBlock {
    Basic(BasicBlock),
    Bottleneck(Bottleneck),
}

impl ResBlock {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            ResBlock::Basic(b) => b.forward(x),
            ResBlock::Bottleneck(b) => b.forward(x),
        }
    }
}

#[derive(Module, Debug)]
pub struct ResNet {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub layer1: Vec<ResBlock>,
    pub layer2: Vec<ResBlock>,
    pub layer3: Vec<ResBlock>,
    pub layer4: Vec<ResBlock>,
    pub linear: Linear,
}

impl ResNet {
    /// `depth` 18 (BasicBlock [2,2,2,2]) or 50 (Bottleneck [3,4,6,3]).
    pub fn new(device: &Device, depth: usize, channels: usize, classes: usize) -> Self {
        let (bottleneck, blocks) = match depth {
            18 => (false, [2, 2, 2, 2]),
            34 => (false, [3, 4, 6, 3]),
            50 => (true, [3, 4, 6, 3]),
            _ => panic!("ResNet depth {depth} is not one of 18, 34, 50"),
        };
        let expansion = if bottleneck {
            Bottleneck::EXPANSION
        } else {
            BasicBlock::EXPANSION
        };
        let mut in_planes = 64;
        let mut stage = |planes: usize, n: usize, stride: usize| -> Vec<ResBlock> {
            (0..n)
                .map(|i| {
                    let s = if i == 0 { stride } else { 1 };
                    let block = if bottleneck {
                        ResBlock::Bottleneck(Bottleneck::new(device, in_planes, planes, s))
                    } else {
                        ResBlock::Basic(BasicBlock::new(device, in_planes, planes, s))
                    };
                    in_planes = planes * expansion;
                    block
                })
                .collect()
        };
        let layer1 = stage(64, blocks[0], 1);
        let layer2 = stage(128, blocks[1], 2);
        let layer3 = stage(256, blocks[2], 2);
        let layer4 = stage(512, blocks[3], 2);
        ResNet {
            conv1: conv3x3(device, channels, 64, 1),
            bn1: bn(device, 64),
            layer1,
            layer2,
            layer3,
            layer4,
            linear: LinearConfig::new(512 * expansion, classes).init(device),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = relu(self.bn1.forward(conv_forward(&self.conv1, x)));
        for layer in [&self.layer1, &self.layer2, &self.layer3, &self.layer4] {
            for block in layer {
                x = block.forward(x);
            }
        }
        self.linear.forward(global_avg_pool(x))
    }
}
