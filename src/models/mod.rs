//! Classifiers by name. Every model maps images in [0,1] (`[N, C, H, W]`) to logits
//! (`[N, classes]`); any input normalisation lives inside the model, so attacks work in pixel
//! space. One file per family; [`Arch`] is the registry that turns names into models.

mod cnn;
mod layers;
mod mobilenetv2;
mod resnet;
mod weights;
mod wide_resnet;

pub use layers::Activation;
pub(crate) use weights::in_key_order;
pub use weights::{
    check_expected, damaged_tensor, load_model, peek_spec, save_model, WeightsError,
};
pub use wide_resnet::WrnForm;

use crate::data::{DatasetKind, ImageShape};
use burn::module::Module;
use burn::prelude::*;
use std::str::FromStr;

/// Anything that turns a batch of images in [0,1] into logits. Attacks see models only
/// through this trait; evaluation passes an eval-mode (`valid()`) snapshot.
pub trait Classifier {
    /// Logits `[N, classes]` of `images` `[N, C, H, W]` with pixels in [0,1].
    fn logits(&self, images: Tensor<4>) -> Tensor<2>;
}

/// An architecture, parsed from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    CnnSmall,
    CnnLarge,
    ResNet(usize),
    MobileNetV2,
    WideResNet {
        depth: usize,
        widen: usize,
        form: WrnForm,
        activation: Activation,
    },
}

/// Names and one-line descriptions, for `rslad models` and error messages.
pub const REGISTRY: &[(&str, &str)] = &[
    ("cnn-small", "3 conv-BN-ReLU layers (32, 64, 128) + linear on the flattened map; 28x28 grey images (CPU student)"),
    ("cnn-large", "5 conv-BN-ReLU layers (32, 64, 64, 128, 128), 3x the compute of cnn-small (CPU teacher)"),
    ("resnet18", "CIFAR ResNet-18 (kuangliu / RSLAD code); the paper's student"),
    ("resnet50", "CIFAR ResNet-50, Bottleneck [3,4,6,3]; the black-box surrogate"),
    ("mobilenetv2", "CIFAR MobileNetV2 (RSLAD code); the paper's second student"),
    ("wrn-34-10", "WideResNet-34-10, TRADES form; the CIFAR-10 teacher"),
    ("wrn-70-16", "WideResNet-70-16, DeepMind/RobustBench form (normalisation, Swish, SAME padding); the CIFAR-100 teacher"),
    ("wrn-D-W", "any WideResNet; suffix -trades (default except 70-16), -dm (Swish) or -dm-relu"),
];

#[derive(Debug, thiserror::Error)]
#[error("unknown model '{name}'. Known models: {}", known_names())]
pub struct UnknownModel {
    pub name: String,
}

fn known_names() -> String {
    REGISTRY
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

impl FromStr for Arch {
    type Err = UnknownModel;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let err = || UnknownModel {
            name: name.to_string(),
        };
        let lower = name.to_ascii_lowercase().replace('_', "-");
        match lower.as_str() {
            "cnn-small" => return Ok(Arch::CnnSmall),
            "cnn-large" => return Ok(Arch::CnnLarge),
            "resnet18" | "resnet-18" => return Ok(Arch::ResNet(18)),
            "resnet34" | "resnet-34" => return Ok(Arch::ResNet(34)),
            "resnet50" | "resnet-50" => return Ok(Arch::ResNet(50)),
            "mobilenetv2" | "mobilenet-v2" => return Ok(Arch::MobileNetV2),
            _ => {}
        }
        let rest = lower.strip_prefix("wrn-").ok_or_else(err)?;
        let parts: Vec<&str> = rest.split('-').collect();
        if parts.len() < 2 {
            return Err(err());
        }
        let depth: usize = parts[0].parse().map_err(|_| err())?;
        let widen: usize = parts[1].parse().map_err(|_| err())?;
        if depth < 10 || !(depth - 4).is_multiple_of(6) || widen == 0 {
            return Err(err());
        }
        let (form, activation) = match &parts[2..] {
            [] if (depth, widen) == (70, 16) => (WrnForm::DeepMind, Activation::Swish),
            [] | ["trades"] => (WrnForm::Trades, Activation::Relu),
            ["dm"] | ["dm", "swish"] => (WrnForm::DeepMind, Activation::Swish),
            ["dm", "relu"] => (WrnForm::DeepMind, Activation::Relu),
            _ => return Err(err()),
        };
        Ok(Arch::WideResNet {
            depth,
            widen,
            form,
            activation,
        })
    }
}

// Read and written by name, as the command line spells it.
crate::units::serde_as_text!(Arch);

impl std::fmt::Display for Arch {
    /// The canonical name, which parses back to the same architecture.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Arch::CnnSmall => write!(f, "cnn-small"),
            Arch::CnnLarge => write!(f, "cnn-large"),
            Arch::ResNet(d) => write!(f, "resnet{d}"),
            Arch::MobileNetV2 => write!(f, "mobilenetv2"),
            Arch::WideResNet {
                depth,
                widen,
                form,
                activation,
            } => {
                let default_dm = (depth, widen) == (70, 16);
                match (form, activation) {
                    (WrnForm::Trades, _) if default_dm => write!(f, "wrn-{depth}-{widen}-trades"),
                    (WrnForm::Trades, _) => write!(f, "wrn-{depth}-{widen}"),
                    (WrnForm::DeepMind, Activation::Swish) if default_dm => {
                        write!(f, "wrn-{depth}-{widen}")
                    }
                    (WrnForm::DeepMind, Activation::Swish) => write!(f, "wrn-{depth}-{widen}-dm"),
                    (WrnForm::DeepMind, Activation::Relu) => {
                        write!(f, "wrn-{depth}-{widen}-dm-relu")
                    }
                }
            }
        }
    }
}

/// What a model is: its architecture and the data it takes. Recorded in every checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModelSpec {
    /// Canonical architecture name (see [`Arch`]).
    pub name: String,
    pub input: ImageShape,
    pub num_classes: usize,
}

impl ModelSpec {
    pub fn new(arch: Arch, input: ImageShape, num_classes: usize) -> Self {
        ModelSpec {
            name: arch.to_string(),
            input,
            num_classes,
        }
    }

    pub fn for_dataset(arch: Arch, dataset: DatasetKind) -> Self {
        Self::new(arch, dataset.shape(), dataset.num_classes())
    }

    pub fn arch(&self) -> Result<Arch, UnknownModel> {
        self.name.parse()
    }

    /// Refuses a model too large to build: at least [`MAX_PARAMETERS`] parameters (ten times
    /// WRN-70-16's), e.g. `wrn-1000-1000`, which would try to allocate terabytes.
    pub fn check_size(&self) -> Result<(), String> {
        let arch = self.arch().map_err(|e| e.to_string())?;
        let least = least_parameters(arch, self);
        if least > MAX_PARAMETERS {
            return Err(format!(
                "{} would have at least {least} parameters, more than the {MAX_PARAMETERS} rslad \
                 builds; choose a smaller depth or width",
                self.name
            ));
        }
        Ok(())
    }

    /// Builds a freshly initialised model (weights from the device's seeded RNG).
    pub fn build(&self, device: &Device) -> Result<Model, UnknownModel> {
        let arch = self.arch()?;
        let (c, k) = (self.input.channels, self.num_classes);
        let size = [self.input.height, self.input.width];
        let net = match arch {
            Arch::CnnSmall => Network::Cnn(cnn::Cnn::new(device, cnn::SMALL, c, size, k, true)),
            Arch::CnnLarge => Network::Cnn(cnn::Cnn::new(device, cnn::LARGE, c, size, k, true)),
            Arch::ResNet(depth) => Network::ResNet(resnet::ResNet::new(device, depth, c, k)),
            Arch::MobileNetV2 => Network::MobileNetV2(mobilenetv2::MobileNetV2::new(device, c, k)),
            Arch::WideResNet {
                depth,
                widen,
                form,
                activation,
            } => {
                let (mean, std) = default_normalisation(c, k);
                let normalize = (form == WrnForm::DeepMind).then_some((mean, std));
                Network::WideResNet(wide_resnet::WideResNet::new(
                    device, depth, widen, form, activation, normalize, c, k,
                ))
            }
        };
        let model = Model {
            net,
            spec: self.clone(),
        };
        model.visit(&mut Materialize);
        Ok(model)
    }
}

/// Largest model rslad builds, in parameters.
pub const MAX_PARAMETERS: u128 = 3_000_000_000;

/// A lower bound on the parameters of `arch` built for `spec` (weights of the convolutions
/// that dominate it and of the classifier), computed without building anything: a checkpoint
/// whose tensors hold fewer values cannot be for that model.
pub(crate) fn least_parameters(arch: Arch, spec: &ModelSpec) -> u128 {
    let classes = spec.num_classes as u128;
    let channels = spec.input.channels as u128;
    match arch {
        Arch::CnnSmall | Arch::CnnLarge => {
            let layers = if arch == Arch::CnnSmall {
                cnn::SMALL
            } else {
                cnn::LARGE
            };
            let [mut h, mut w] = [spec.input.height as u128, spec.input.width as u128];
            let mut in_ch = channels;
            let mut convs = 0u128;
            for &(out_ch, stride) in layers {
                convs += 9 * in_ch * out_ch as u128;
                in_ch = out_ch as u128;
                let stride = stride as u128;
                h = (h + 2).saturating_sub(3) / stride + 1;
                w = (w + 2).saturating_sub(3) / stride + 1;
            }
            convs + in_ch * h * w * classes
        }
        Arch::ResNet(depth) => {
            let features = if depth >= 50 { 2048 } else { 512 };
            features * classes
        }
        Arch::MobileNetV2 => 1280 * classes,
        Arch::WideResNet { depth, widen, .. } => {
            // Saturating: a name such as wrn-10-18446744073709551615 is "too many", not a wrap.
            let blocks = ((depth.saturating_sub(4)) / 6) as u128;
            let k = widen as u128;
            let convs = [16, 32, 64].iter().fold(0u128, |sum, &c| {
                let w = k.saturating_mul(c);
                sum.saturating_add(blocks.saturating_mul(9).saturating_mul(w).saturating_mul(w))
            });
            convs.saturating_add(k.saturating_mul(64).saturating_mul(classes))
        }
    }
}

/// Initialises every parameter now. burn initialises lazily and clones share the lazy state,
/// so a `valid()` or `no_grad()` copy that happened to touch a parameter first would decide
/// its value for the training module too (untracked, without gradients).
struct Materialize;

impl burn::module::ModuleVisitor for Materialize {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
        let _ = param.val();
    }
}

/// The per-channel statistics a DeepMind-form WRN starts with (its checkpoint's own values
/// replace them on import).
fn default_normalisation(channels: usize, classes: usize) -> (&'static [f32], &'static [f32]) {
    match (channels, classes) {
        (1, _) => (&[0.2860], &[0.3530]),
        (_, 100) => (&[0.5071, 0.4865, 0.4409], &[0.2673, 0.2564, 0.2762]),
        _ => (&[0.4914, 0.4822, 0.4465], &[0.2471, 0.2435, 0.2616]),
    }
}

// Boxing the variants would break burn's Module derive; a model is built once, so size is moot.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Network {
    Cnn(cnn::Cnn),
    ResNet(resnet::ResNet),
    MobileNetV2(mobilenetv2::MobileNetV2),
    WideResNet(wide_resnet::WideResNet),
}

/// A classifier together with the spec it was built from.
#[derive(Module, Debug)]
pub struct Model {
    pub net: Network,
    #[module(skip)]
    pub spec: ModelSpec,
}

impl Model {
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        match &self.net {
            Network::Cnn(m) => m.forward(images),
            Network::ResNet(m) => m.forward(images),
            Network::MobileNetV2(m) => m.forward(images),
            Network::WideResNet(m) => m.forward(images),
        }
    }
}

impl Model {
    /// Trainable parameters, as PyTorch counts them: BatchNorm running statistics and the
    /// normalisation constants are buffers, not parameters.
    pub fn count_parameters(&self) -> usize {
        use burn::store::ModuleSnapshot;
        self.collect(None, None, true)
            .iter()
            .filter(|t| !is_buffer(&t.name))
            .map(|t| t.shape.num_elements())
            .sum()
    }
}

/// Tensors that are state, not parameters: never decayed, never counted.
pub fn is_buffer(name: &str) -> bool {
    name.ends_with("running_mean")
        || name.ends_with("running_var")
        || name.ends_with("normalize.mean")
        || name.ends_with("normalize.std")
}

impl Classifier for Model {
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward(images)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in [
            "cnn-small",
            "cnn-large",
            "resnet18",
            "resnet50",
            "mobilenetv2",
            "wrn-34-10",
            "wrn-70-16",
            "wrn-70-16-trades",
            "wrn-28-10-dm",
            "wrn-28-10-dm-relu",
        ] {
            let arch: Arch = name.parse().unwrap();
            assert_eq!(arch.to_string(), name);
        }
        assert!(matches!(
            "wrn-70-16".parse::<Arch>().unwrap(),
            Arch::WideResNet {
                form: WrnForm::DeepMind,
                activation: Activation::Swish,
                ..
            }
        ));
        assert!("wrn-33-10".parse::<Arch>().is_err());
        assert!("resnet19".parse::<Arch>().is_err());
        let err = "vgg16".parse::<Arch>().unwrap_err().to_string();
        assert!(err.contains("vgg16") && err.contains("resnet18"), "{err}");
    }
}

#[cfg(test)]
mod shape_tests {
    use super::*;

    fn cifar10(name: &str) -> ModelSpec {
        ModelSpec::new(name.parse().unwrap(), DatasetKind::Cifar10.shape(), 10)
    }

    /// Trainable parameters (BatchNorm running statistics and normalisation buffers excluded)
    /// equal the PyTorch reference definitions' counts (docs/spec/models.md).
    #[test]
    fn parameter_counts_match_the_references() {
        let device = Device::default();
        for (name, classes, expected) in [
            ("resnet18", 10, 11_173_962),
            ("resnet18", 100, 11_220_132),
            ("mobilenetv2", 10, 2_296_922),
            ("mobilenetv2", 100, 2_412_212),
            ("resnet50", 10, 23_520_842),
            ("resnet50", 100, 23_705_252),
            ("wrn-34-10", 10, 46_160_474),
            ("wrn-34-10", 100, 46_218_164),
            ("wrn-70-16", 10, 266_796_506),
            ("wrn-70-16", 100, 266_888_756),
        ] {
            let spec = ModelSpec::new(name.parse().unwrap(), DatasetKind::Cifar10.shape(), classes);
            let model = spec.build(&device).unwrap();
            assert_eq!(
                model.count_parameters(),
                expected,
                "{name} with {classes} classes"
            );
        }
        let grey = ModelSpec::new(Arch::ResNet(18), DatasetKind::FashionMnist.shape(), 10);
        assert_eq!(grey.build(&device).unwrap().count_parameters(), 11_172_810);
        let small = ModelSpec::for_dataset(Arch::CnnSmall, DatasetKind::FashionMnist);
        assert!(small.build(&device).unwrap().count_parameters() < 500_000);
    }

    #[test]
    fn forward_shapes() {
        let device = Device::default();
        for (name, dataset) in [
            ("cnn-small", DatasetKind::FashionMnist),
            ("cnn-large", DatasetKind::FashionMnist),
            ("resnet18", DatasetKind::FashionMnist),
            ("mobilenetv2", DatasetKind::Cifar100),
            ("wrn-10-1", DatasetKind::Cifar10),
            ("wrn-10-1-dm", DatasetKind::Cifar100),
        ] {
            let spec = ModelSpec::for_dataset(name.parse().unwrap(), dataset);
            let model = spec.build(&device).unwrap().valid();
            let s = dataset.shape();
            let x = Tensor::<4>::zeros([2, s.channels, s.height, s.width], &device);
            let y = model.forward(x);
            assert_eq!(y.dims(), [2, dataset.num_classes()], "{name}");
        }
        let _ = cifar10("resnet18");
    }
}
