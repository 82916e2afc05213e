//! Pre-activation WideResNet-D-W in two forms:
//! - TRADES form (`models/wideresnet.py` of TRADES and RSLAD): ReLU, symmetric padding, no input
//!   normalisation; the CIFAR-10 teacher WRN-34-10.
//! - DeepMind form (RobustBench `dm_wide_resnet.py`, Gowal et al. 2020): input normalisation
//!   `(x - mean) / std` inside the model, Swish or ReLU, and TensorFlow "SAME" padding (explicit
//!   pad (1,1,1,1) at stride 1, right/bottom only at stride 2); the CIFAR-100 teacher WRN-70-16.
//!
//! Both have the same parameters: the forms differ in computation only.

use super::layers::{bn, conv, conv1x1, conv3x3, conv_forward, global_avg_pool, Activation};
use burn::module::{Module, RunningState};
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;

/// Which reference definition a WideResNet follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WrnForm {
    Trades,
    DeepMind,
}

/// BN → act → conv3×3 (stride s) → BN → act → conv3×3; the shortcut is a 1×1 conv of the
/// pre-activated input when the width changes, else the raw input.
#[derive(Module, Debug)]
pub struct WrnBlock {
    pub bn1: BatchNorm,
    pub conv1: Conv2d,
    pub bn2: BatchNorm,
    pub conv2: Conv2d,
    pub shortcut: Option<Conv2d>,
}

impl WrnBlock {
    fn new(
        device: &Device,
        in_planes: usize,
        out_planes: usize,
        stride: usize,
        form: WrnForm,
    ) -> Self {
        let padding = match (form, stride) {
            (WrnForm::DeepMind, 2) => PaddingConfig2d::Explicit(0, 0, 1, 1),
            _ => PaddingConfig2d::Explicit(1, 1, 1, 1),
        };
        WrnBlock {
            bn1: bn(device, in_planes),
            conv1: conv(device, in_planes, out_planes, 3, stride, padding, 1),
            bn2: bn(device, out_planes),
            conv2: conv3x3(device, out_planes, out_planes, 1),
            shortcut: (in_planes != out_planes)
                .then(|| conv1x1(device, in_planes, out_planes, stride)),
        }
    }

    fn forward(&self, x: Tensor<4>, act: Activation) -> Tensor<4> {
        let pre = act.apply(self.bn1.forward(x.clone()));
        let out = act.apply(self.bn2.forward(conv_forward(&self.conv1, pre.clone())));
        let out = conv_forward(&self.conv2, out);
        match &self.shortcut {
            Some(s) => conv_forward(s, pre) + out,
            None => x + out,
        }
    }
}

/// Per-channel `(x - mean) / std`, carried by the model so attacks stay in [0,1] pixel space.
#[derive(Module, Debug)]
pub struct Normalize {
    pub mean: RunningState<Tensor<1>>,
    pub std: RunningState<Tensor<1>>,
}

impl Normalize {
    pub fn new(device: &Device, mean: &[f32], std: &[f32]) -> Self {
        Normalize {
            mean: RunningState::new(Tensor::from_floats(mean, device)),
            std: RunningState::new(Tensor::from_floats(std, device)),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let device = x.device();
        let c = x.dims()[1];
        let mean = self.mean.value().to_device(&device).reshape([1, c, 1, 1]);
        let std = self.std.value().to_device(&device).reshape([1, c, 1, 1]);
        (x - mean) / std
    }
}

#[derive(Module, Debug)]
pub struct WideResNet {
    pub normalize: Option<Normalize>,
    pub conv1: Conv2d,
    pub block1: Vec<WrnBlock>,
    pub block2: Vec<WrnBlock>,
    pub block3: Vec<WrnBlock>,
    pub bn: BatchNorm,
    pub fc: Linear,
    #[module(skip)]
    pub activation: Activation,
}

impl WideResNet {
    /// `normalize`: per-channel (mean, std) applied to the [0,1] input, for the DeepMind form.
    #[allow(clippy::too_many_arguments)] // the architecture's own hyperparameters, all named
    pub fn new(
        device: &Device,
        depth: usize,
        widen: usize,
        form: WrnForm,
        activation: Activation,
        normalize: Option<(&[f32], &[f32])>,
        channels: usize,
        classes: usize,
    ) -> Self {
        assert!(
            depth >= 10 && (depth - 4).is_multiple_of(6),
            "WRN depth must be 6n+4"
        );
        let n = (depth - 4) / 6;
        let widths = [16, 16 * widen, 32 * widen, 64 * widen];
        let group = |in_planes: usize, out_planes: usize, stride: usize| -> Vec<WrnBlock> {
            (0..n)
                .map(|i| {
                    let (inp, s) = if i == 0 {
                        (in_planes, stride)
                    } else {
                        (out_planes, 1)
                    };
                    WrnBlock::new(device, inp, out_planes, s, form)
                })
                .collect()
        };
        WideResNet {
            normalize: normalize.map(|(m, s)| Normalize::new(device, m, s)),
            conv1: conv3x3(device, channels, widths[0], 1),
            block1: group(widths[0], widths[1], 1),
            block2: group(widths[1], widths[2], 2),
            block3: group(widths[2], widths[3], 2),
            bn: bn(device, widths[3]),
            fc: LinearConfig::new(widths[3], classes).init(device),
            activation,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x = match &self.normalize {
            Some(n) => n.forward(x),
            None => x,
        };
        let mut x = conv_forward(&self.conv1, x);
        for group in [&self.block1, &self.block2, &self.block3] {
            for block in group {
                x = block.forward(x, self.activation);
            }
        }
        let x = self.activation.apply(self.bn.forward(x));
        self.fc.forward(global_avg_pool(x))
    }
}
