//! Key layouts of the PyTorch reference definitions, as a map from rslad's tensor names to
//! PyTorch `state_dict` keys (and the inverse, for import). One function per direction keeps
//! import and export exact inverses of each other.
//!
//! - `rslad`: the RSLAD code's `cifar10_models` (kuangliu ResNet-18/50, MobileNetV2), and
//!   rslad's own cnn-* mirrored one to one.
//! - `trades`: TRADES `models/wideresnet.py` (`block{g}.layer.{j}`, `convShortcut`, `bn1`,
//!   `fc`, and an unused `sub_block1` group).
//! - `robustbench`: RobustBench `dm_wide_resnet.py` (`init_conv`, `layer.{g}.block.{j}`,
//!   `batchnorm_0/1`, `conv_0/1`, `batchnorm`, `logits`, buffers `mean`, `std`).

use crate::models::{Arch, WrnForm};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Rslad,
    Trades,
    RobustBench,
}

/// A layout name that is none of [`Layout`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("layout '{0}' is not rslad, trades or robustbench")]
pub struct UnknownLayout(pub String);

impl std::str::FromStr for Layout {
    type Err = UnknownLayout;
    fn from_str(s: &str) -> Result<Self, UnknownLayout> {
        match s {
            "rslad" => Ok(Layout::Rslad),
            "trades" => Ok(Layout::Trades),
            "robustbench" => Ok(Layout::RobustBench),
            _ => Err(UnknownLayout(s.to_string())),
        }
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Layout::Rslad => "rslad",
            Layout::Trades => "trades",
            Layout::RobustBench => "robustbench",
        })
    }
}

/// The layout a model's reference definition uses.
pub fn default_layout(arch: Arch) -> Layout {
    match arch {
        Arch::WideResNet {
            form: WrnForm::Trades,
            ..
        } => Layout::Trades,
        Arch::WideResNet {
            form: WrnForm::DeepMind,
            ..
        } => Layout::RobustBench,
        _ => Layout::Rslad,
    }
}

/// Whether `layout` can describe `arch`.
pub fn fits(layout: Layout, arch: Arch) -> bool {
    match layout {
        Layout::Rslad => !matches!(arch, Arch::WideResNet { .. }),
        Layout::Trades => matches!(
            arch,
            Arch::WideResNet {
                form: WrnForm::Trades,
                ..
            }
        ),
        Layout::RobustBench => matches!(
            arch,
            Arch::WideResNet {
                form: WrnForm::DeepMind,
                ..
            }
        ),
    }
}

/// How a tensor's data changes between rslad and PyTorch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    None,
    /// burn's Linear weight is `[in, out]`, PyTorch's `[out, in]`.
    Transpose,
    /// `[C]` in rslad, `[1, C, 1, 1]` in the RobustBench model.
    ChannelView,
}

/// The PyTorch key and transform of an rslad tensor name (`net.…`).
pub fn to_torch(name: &str, layout: Layout) -> (String, Transform) {
    let name = name.strip_prefix("net.").unwrap_or(name);
    let mut parts: Vec<String> = name.split('.').map(str::to_string).collect();
    let last = parts.len() - 1;
    // BatchNorm parameters: gamma/beta are PyTorch's weight/bias.
    match parts[last].as_str() {
        "gamma" => parts[last] = "weight".into(),
        "beta" => parts[last] = "bias".into(),
        _ => {}
    }
    let is_linear =
        matches!(parts[0].as_str(), "linear" | "fc") && parts[last] == "weight" && parts.len() == 2;
    let mut transform = if is_linear {
        Transform::Transpose
    } else {
        Transform::None
    };
    let key = match layout {
        Layout::Rslad => {
            // shortcut.conv / shortcut.bn are the Sequential's entries 0 and 1.
            if let Some(i) = parts.iter().position(|p| p == "shortcut") {
                if i + 1 < parts.len() {
                    parts[i + 1] = match parts[i + 1].as_str() {
                        "conv" => "0".into(),
                        "bn" => "1".into(),
                        other => other.into(),
                    };
                }
            }
            parts.join(".")
        }
        Layout::Trades => {
            if parts[0].starts_with("block") && parts.len() > 2 {
                if parts[2] == "shortcut" {
                    parts[2] = "convShortcut".into();
                }
                parts.insert(1, "layer".into());
            } else if parts[0] == "bn" {
                parts[0] = "bn1".into();
            }
            parts.join(".")
        }
        Layout::RobustBench => {
            if parts[0] == "normalize" {
                transform = Transform::ChannelView;
                parts.remove(0);
            } else if parts[0] == "conv1" {
                parts[0] = "init_conv".into();
            } else if parts[0] == "bn" {
                parts[0] = "batchnorm".into();
            } else if parts[0] == "fc" {
                parts[0] = "logits".into();
            } else if let Some(g) = parts[0]
                .strip_prefix("block")
                .and_then(|g| g.parse::<usize>().ok())
            {
                parts[2] = match parts[2].as_str() {
                    "bn1" => "batchnorm_0".into(),
                    "conv1" => "conv_0".into(),
                    "bn2" => "batchnorm_1".into(),
                    "conv2" => "conv_1".into(),
                    other => other.into(),
                };
                parts[0] = format!("{}", g - 1);
                parts.insert(0, "layer".into());
                parts.insert(2, "block".into());
            }
            parts.join(".")
        }
    };
    (key, transform)
}

/// PyTorch keys that hold nothing rslad needs: BatchNorm step counters and TRADES' unused
/// `sub_block1` group.
pub fn ignorable(key: &str, layout: Layout) -> bool {
    key.ends_with("num_batches_tracked")
        || (layout == Layout::Trades && key.starts_with("sub_block1."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_keys() {
        let r = |n: &str, l| to_torch(n, l).0;
        assert_eq!(
            r("net.layer2.0.shortcut.conv.weight", Layout::Rslad),
            "layer2.0.shortcut.0.weight"
        );
        assert_eq!(
            r("net.layer2.0.shortcut.bn.gamma", Layout::Rslad),
            "layer2.0.shortcut.1.weight"
        );
        assert_eq!(
            r("net.layers.3.bn2.running_var", Layout::Rslad),
            "layers.3.bn2.running_var"
        );
        assert_eq!(
            to_torch("net.linear.weight", Layout::Rslad),
            ("linear.weight".into(), Transform::Transpose)
        );
        assert_eq!(
            r("net.block2.0.shortcut.weight", Layout::Trades),
            "block2.layer.0.convShortcut.weight"
        );
        assert_eq!(
            r("net.block1.3.bn1.beta", Layout::Trades),
            "block1.layer.3.bn1.bias"
        );
        assert_eq!(r("net.bn.running_mean", Layout::Trades), "bn1.running_mean");
        assert_eq!(r("net.fc.bias", Layout::Trades), "fc.bias");
        assert_eq!(
            r("net.conv1.weight", Layout::RobustBench),
            "init_conv.weight"
        );
        assert_eq!(
            r("net.block3.10.conv2.weight", Layout::RobustBench),
            "layer.2.block.10.conv_1.weight"
        );
        assert_eq!(
            r("net.block1.0.bn1.gamma", Layout::RobustBench),
            "layer.0.block.0.batchnorm_0.weight"
        );
        assert_eq!(
            r("net.block1.0.shortcut.weight", Layout::RobustBench),
            "layer.0.block.0.shortcut.weight"
        );
        assert_eq!(
            to_torch("net.normalize.mean", Layout::RobustBench),
            ("mean".into(), Transform::ChannelView)
        );
        assert_eq!(
            to_torch("net.fc.weight", Layout::RobustBench),
            ("logits.weight".into(), Transform::Transpose)
        );
        assert!(ignorable("sub_block1.layer.0.bn1.weight", Layout::Trades));
        assert!(!ignorable("sub_block1.layer.0.bn1.weight", Layout::Rslad));
    }
}
