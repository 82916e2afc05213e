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
        self.bn.forward(conv_forward(&self.conv, x))
    }
}

/// `conv.forward(x)`, computed another way for two shapes that burn's flex CPU backend lowers
/// slowly (docs/performance.md, the bench's conv rows). Both rewrites give the same numbers
/// as `conv.forward`, bit for bit (the tests below); other backends and shapes are untouched.
/// - A 1×1 convolution with stride s (ResNet and WideResNet shortcuts) is the 1×1 convolution
///   of every s-th pixel: flex's 1×1 fast path takes stride 1 only, and stride 2 went through
///   im2col (ResNet-18's shortcuts: forward 2.5–7x, with gradients 2.2–2.6x faster).
/// - A 3×3 convolution (stride 1, padding 1) of an input with at most 4 channels into more than
///   16, without gradients (a model's first layer in evaluation): flex runs it as a gemm with
///   K = 9·C_in; stacking the 9 shifted copies of the input as channels makes it a 1×1
///   convolution (forward 1.4x at batch 128, 2.8x at 17, the size of Square's queries). With
///   gradients burn's own backward is faster, so that path keeps `conv.forward`.
pub fn conv_forward(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if x.device() == Device::flex() {
        if let Some(y) = flex_rewrite(conv, x.clone()) {
            return y;
        }
    }
    conv.forward(x)
}

#[cfg(feature = "flex")]
fn flex_rewrite(conv: &Conv2d, x: Tensor<4>) -> Option<Tensor<4>> {
    use burn::tensor::module::conv2d;
    use burn::tensor::ops::{ConvOptions, PadMode};
    use burn::tensor::s;
    let [_, c_in, h, w] = x.dims();
    let [c_out, _, kh, kw] = conv.weight.dims();
    // The same padding on every side, when it is explicit (or none).
    let padding = match conv.padding {
        PaddingConfig2d::Valid => Some(0),
        PaddingConfig2d::Explicit(t, l, b, r) if [l, b, r] == [t; 3] => Some(t),
        _ => None,
    };
    let plain = conv.dilation == [1, 1] && conv.groups == 1;
    let one_by_one = ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
    let bias = conv.bias.as_ref().map(|b| b.val());
    let [sh, sw] = conv.stride.map(|s| s as isize);
    if plain && [kh, kw] == [1, 1] && padding == Some(0) && (sh, sw) != (1, 1) {
        let every = x.slice(s![.., .., ..;sh, ..;sw]);
        return Some(conv2d(every, conv.weight.val(), bias, one_by_one));
    }
    let first_layer = plain && [kh, kw] == [3, 3] && conv.stride == [1, 1];
    if first_layer && padding == Some(1) && c_in <= 4 && c_out > 16 && !x.device().is_autodiff() {
        let padded = x.pad([(1, 1), (1, 1)], PadMode::Constant(0.0));
        let shifted: Vec<Tensor<4>> = (0..3)
            .flat_map(|dy| (0..3).map(move |dx| (dy, dx)))
            .map(|(dy, dx)| padded.clone().slice(s![.., .., dy..dy + h, dx..dx + w]))
            .collect();
        // Channel k·C_in + c of the stack is channel c shifted by k = (dy, dx); the weight
        // [C_out, C_in, 3, 3] is reordered to match.
        let weight = conv
            .weight
            .val()
            .permute([0, 2, 3, 1])
            .reshape([c_out, 9 * c_in, 1, 1]);
        return Some(conv2d(Tensor::cat(shifted, 1), weight, bias, one_by_one));
    }
    None
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

    #[cfg(feature = "flex")]
    fn values(t: Tensor<4>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    /// The flex rewrites give `conv.forward`'s numbers bit for bit: strided 1×1 convolutions
    /// (with and without gradients, and the input gradient too) and a first layer of 1 or 3
    /// channels evaluated without gradients; shapes the rewrites leave alone still match.
    #[cfg(feature = "flex")]
    #[test]
    fn flex_rewrites_give_the_convolutions_numbers() {
        let device = Device::flex();
        device.seed(7);
        let uniform = burn::tensor::Distribution::Uniform(-1.0, 1.0);
        // (in, out, kernel, stride, input size): rewritten ones first, then untouched ones.
        let cases = [
            (64, 128, 1, 2, 16),
            (16, 32, 1, 2, 9),
            (1, 32, 3, 1, 28),
            (3, 64, 3, 1, 12),
            (3, 16, 3, 1, 12),
            (8, 32, 3, 1, 10),
            (16, 32, 3, 2, 10),
        ];
        for (c_in, c_out, k, stride, size) in cases {
            let conv = if k == 1 {
                conv1x1(&device, c_in, c_out, stride)
            } else {
                conv3x3(&device, c_in, c_out, stride)
            };
            let x = Tensor::<4>::random([5, c_in, size, size], uniform, &device);
            let want = values(conv.forward(x.clone()));
            let got = values(conv_forward(&conv, x.clone()));
            assert_eq!(got, want, "{c_in}->{c_out} k{k} s{stride}");
            // With gradients (an attack's input gradient through a valid model).
            let grad_of = |f: &dyn Fn(Tensor<4>) -> Tensor<4>| {
                let xa = x.clone().autodiff().require_grad();
                let y = f(xa.clone());
                let g = xa.grad(&(y.clone() * y).sum().backward()).unwrap();
                values(g)
            };
            let want = grad_of(&|x| conv.forward(x));
            let got = grad_of(&|x| conv_forward(&conv, x));
            assert_eq!(got, want, "input gradient {c_in}->{c_out} k{k} s{stride}");
        }
    }
}
