//! CIFAR MobileNetV2 as in the RSLAD code (`cifar10_models/mobilenet_v2.py`): stride-1 stem, the
//! second stage at stride 1, plain ReLU, and a 1×1 conv + BN shortcut on stride-1 blocks whose
//! width changes (unlike the ImageNet MobileNetV2).

use super::layers::{bn, conv, conv1x1, conv3x3, conv_forward, global_avg_pool, relu, ConvBn};
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;

/// (expansion, out_planes, blocks, stride) per stage.
const CFG: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

/// 1×1 expand → BN → ReLU → 3×3 depthwise (stride s) → BN → ReLU → 1×1 project → BN; residual
/// only at stride 1.
#[derive(Module, Debug)]
pub struct InvertedResidual {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub conv2: Conv2d,
    pub bn2: BatchNorm,
    pub conv3: Conv2d,
    pub bn3: BatchNorm,
    pub shortcut: Option<ConvBn>,
    pub stride: usize,
}

impl InvertedResidual {
    fn new(
        device: &Device,
        in_planes: usize,
        out_planes: usize,
        expansion: usize,
        stride: usize,
    ) -> Self {
        let planes = expansion * in_planes;
        InvertedResidual {
            conv1: conv1x1(device, in_planes, planes, 1),
            bn1: bn(device, planes),
            conv2: conv(
                device,
                planes,
                planes,
                3,
                stride,
                PaddingConfig2d::Explicit(1, 1, 1, 1),
                planes,
            ),
            bn2: bn(device, planes),
            conv3: conv1x1(device, planes, out_planes, 1),
            bn3: bn(device, out_planes),
            shortcut: (stride == 1 && in_planes != out_planes)
                .then(|| ConvBn::new(device, in_planes, out_planes, 1)),
            stride,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let out = relu(self.bn1.forward(conv_forward(&self.conv1, x.clone())));
        let out = relu(self.bn2.forward(conv_forward(&self.conv2, out)));
        let out = self.bn3.forward(conv_forward(&self.conv3, out));
        if self.stride != 1 {
            return out;
        }
        match &self.shortcut {
            Some(s) => out + s.forward(x),
            None => out + x,
        }
    }
}

#[derive(Module, Debug)]
pub struct MobileNetV2 {
    pub conv1: Conv2d,
    pub bn1: BatchNorm,
    pub layers: Vec<InvertedResidual>,
    pub conv2: Conv2d,
    pub bn2: BatchNorm,
    pub linear: Linear,
}

impl MobileNetV2 {
    pub fn new(device: &Device, channels: usize, classes: usize) -> Self {
        let mut layers = Vec::new();
        let mut in_planes = 32;
        for (expansion, out_planes, blocks, stride) in CFG {
            for i in 0..blocks {
                let s = if i == 0 { stride } else { 1 };
                layers.push(InvertedResidual::new(
                    device, in_planes, out_planes, expansion, s,
                ));
                in_planes = out_planes;
            }
        }
        MobileNetV2 {
            conv1: conv3x3(device, channels, 32, 1),
            bn1: bn(device, 32),
            layers,
            conv2: conv1x1(device, 320, 1280, 1),
            bn2: bn(device, 1280),
            linear: LinearConfig::new(1280, classes).init(device),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = relu(self.bn1.forward(conv_forward(&self.conv1, x)));
        for layer in &self.layers {
            x = layer.forward(x);
        }
        let x = relu(self.bn2.forward(conv_forward(&self.conv2, x)));
        self.linear.forward(global_avg_pool(x))
    }
}
