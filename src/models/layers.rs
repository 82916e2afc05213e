//! Small building blocks shared by the model families.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, PaddingConfig2d};
use burn::prelude::*;

/// Activation of the WideResNet family: ReLU (TRADES) or Swish = x·sigmoid(x) (the RobustBench
/// CIFAR-100 WRN-70-16 of Gowal et al. 2020).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Relu,
    Swish,
}

impl Activation {
    pub fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Activation::Relu => burn::tensor::activation::relu(x),
            Activation::Swish => burn::tensor::activation::silu(x),
        }
    }
}

/// A bias-free convolution with PyTorch's default (Kaiming-uniform, a = sqrt(5)) initialisation.
pub fn conv(
    device: &Device,
    in_ch: usize,
    out_ch: usize,
    kernel: usize,
    stride: usize,
    padding: PaddingConfig2d,
    groups: usize,
) -> Conv2d {
    Conv2dConfig::new([in_ch, out_ch], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(padding)
        .with_groups(groups)
        .with_bias(false)
        .with_initializer(Initializer::KaimingUniform {
            gain: 1.0 / 3f64.sqrt(),
            fan_out_only: false,
        })
        .init(device)
}

/// 3×3 convolution with symmetric padding 1 (so stride 1 keeps the size).
pub fn conv3x3(device: &Device, in_ch: usize, out_ch: usize, stride: usize) -> Conv2d {
    conv(
        device,
        in_ch,
        out_ch,
        3,
        stride,
        PaddingConfig2d::Explicit(1, 1, 1, 1),
        1,
    )
}

/// 1×1 convolution, no padding.
pub fn conv1x1(device: &Device, in_ch: usize, out_ch: usize, stride: usize) -> Conv2d {
    conv(device, in_ch, out_ch, 1, stride, PaddingConfig2d::Valid, 1)
}

pub fn bn(device: &Device, channels: usize) -> BatchNorm {
    BatchNormConfig::new(channels).init(device)
}

/// A projection shortcut: 1×1 convolution (stride s) then BatchNorm (PyTorch keys
/// `shortcut.0`, `shortcut.1`).
#[derive(Module, Debug)]
pub struct ConvBn {
    pub conv: Conv2d,
    pub bn: BatchNorm,
}

impl ConvBn {
    pub fn new(device: &Device, in_ch: usize, out_ch: usize, stride: usize) -> Self {
        ConvBn {
            conv: conv1x1(device, in_ch, out_ch, stride),
            bn: bn(device, out_ch),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.bn.forward(self.conv.forward(x))
    }
}

/// Mean over the spatial dimensions: [N, C, H, W] -> [N, C]. The reference codes' fixed-size
/// `avg_pool2d` equals this on 32×32 inputs, and this also works on 28×28. An adaptive pool,
/// not two `mean_dim`s, so that the ONNX export lowers it to one GlobalAveragePool.
pub fn global_avg_pool(x: Tensor<4>) -> Tensor<2> {
    let [n, c, _, _] = x.dims();
    burn::tensor::module::adaptive_avg_pool2d(x, [1, 1]).reshape([n, c])
}

pub fn relu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    burn::tensor::activation::relu(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The adaptive pool gives the spatial mean, and its gradient is 1/(H·W) everywhere.
    #[test]
    fn global_avg_pool_is_the_spatial_mean_with_its_gradient() {
        let device = Device::default();
        let v: Vec<f32> = (0..2 * 3 * 7 * 7)
            .map(|i| ((i * 37) % 101) as f32 / 50.0)
            .collect();
        let x = Tensor::<4>::from_data(TensorData::new(v.clone(), [2, 3, 7, 7]), &device);
        let xa = x.autodiff().require_grad();
        let pooled = global_avg_pool(xa.clone());
        let grad = xa.grad(&pooled.clone().sum().backward()).unwrap();
        let got = pooled
            .detach()
            .without_autodiff()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        for (k, g) in got.iter().enumerate() {
            let want = v[k * 49..(k + 1) * 49].iter().sum::<f32>() / 49.0;
            assert!((g - want).abs() < 1e-5, "{k}: {g} vs {want}");
        }
        for g in grad.into_data().try_to_vec::<f32>().unwrap() {
            assert!((g - 1.0 / 49.0).abs() < 1e-7, "{g}");
        }
    }
}
