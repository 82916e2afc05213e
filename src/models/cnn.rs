//! rslad's own small conv nets for 28×28 grey images (CPU-scale work). They keep BatchNorm so
//! that the BatchNorm-mode rules of the methods and attacks are exercised at CPU scale.

use super::layers::{bn, conv3x3, conv_forward, global_avg_pool, relu};
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Linear, LinearConfig};
use burn::prelude::*;

#[derive(Module, Debug)]
pub struct ConvBnRelu {
    pub conv: Conv2d,
    pub bn: BatchNorm,
}

impl ConvBnRelu {
    fn new(device: &Device, in_ch: usize, out_ch: usize, stride: usize) -> Self {
        ConvBnRelu {
            conv: conv3x3(device, in_ch, out_ch, stride),
            bn: bn(device, out_ch),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        relu(self.bn.forward(conv_forward(&self.conv, x)))
    }
}

/// A plain stack of 3×3 conv–BN–ReLU layers, global average pooling and a linear head.
#[derive(Module, Debug)]
pub struct Cnn {
    pub features: Vec<ConvBnRelu>,
    pub linear: Linear,
    /// Classify the flattened feature map (true) or its global average (false).
    pub flatten: bool,
}

/// `(out_channels, stride)` of each layer.
pub const SMALL: &[(usize, usize)] = &[(32, 1), (64, 2), (128, 2)];
pub const LARGE: &[(usize, usize)] = &[(32, 1), (64, 2), (64, 1), (128, 2), (128, 1)];

impl Cnn {
    /// `size` is the input's height and width; with `flatten` the head sees the whole
    /// final feature map.
    pub fn new(
        device: &Device,
        layers: &[(usize, usize)],
        channels: usize,
        size: [usize; 2],
        classes: usize,
        flatten: bool,
    ) -> Self {
        let mut features = Vec::with_capacity(layers.len());
        let mut in_ch = channels;
        let [mut h, mut w] = size;
        for &(out_ch, stride) in layers {
            features.push(ConvBnRelu::new(device, in_ch, out_ch, stride));
            in_ch = out_ch;
            h = (h + 2).saturating_sub(3) / stride + 1;
            w = (w + 2).saturating_sub(3) / stride + 1;
        }
        let head_in = if flatten { in_ch * h * w } else { in_ch };
        Cnn {
            features,
            linear: LinearConfig::new(head_in, classes).init(device),
            flatten,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut x = x;
        for layer in &self.features {
            x = layer.forward(x);
        }
        if self.flatten {
            let n = x.dims()[0];
            self.linear.forward(x.reshape([n as i32, -1]))
        } else {
            self.linear.forward(global_avg_pool(x))
        }
    }
}
