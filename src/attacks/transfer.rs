//! Black-box transfer attack: adversarial examples crafted with a white-box attack on a
//! surrogate model (the paper: an adversarially trained ResNet-50), then shown to the target.

use super::parse::AttackOptions;
use super::pgd::{Pgd, Preset};
use super::registry::{AttackEntry, Input};
use super::{Attack, AttackContext, AttackError, Outcome};
use crate::models::{load_model, peek_spec, Classifier, Model, WeightsError};
use burn::prelude::*;
use std::path::PathBuf;

pub const TRANSFER: AttackEntry = AttackEntry {
    names: &["transfer"],
    help: "PGD_SAT-style PGD-20 and CW-inf crafted on the surrogate checkpoint PATH (2 columns)",
    input: Input::Path,
    // The surrogate is checked to have the target's classes.
    min_classes: 1,
    build: |o, ctx| build(o, ctx, &[Preset::Sat, Preset::Cw]),
};

pub const TRANSFER_PGD: AttackEntry = AttackEntry {
    names: &["transfer-pgd"],
    help: "PGD_SAT-style PGD-20 crafted on the surrogate checkpoint PATH",
    input: Input::Path,
    min_classes: 1,
    build: |o, ctx| build(o, ctx, &[Preset::Sat]),
};

pub const TRANSFER_CW: AttackEntry = AttackEntry {
    names: &["transfer-cw"],
    help: "CW-inf crafted on the surrogate checkpoint PATH",
    input: Input::Path,
    min_classes: 1,
    build: |o, ctx| build(o, ctx, &[Preset::Cw]),
};

/// One transfer attack per preset, each crafting its points on the surrogate at `o.path()`
/// (at the evaluation's ε and seed).
fn build(
    o: &AttackOptions,
    ctx: &AttackContext,
    presets: &[Preset],
) -> Result<Vec<Box<dyn Attack>>, AttackError> {
    if o.path().is_empty() {
        return Err(o.bad(format!("needs a surrogate checkpoint: {}:PATH", o.attack())));
    }
    let path = PathBuf::from(o.path());
    let surrogate_err = |e: WeightsError| {
        let text = e.to_string();
        let prefix = format!("{}: ", path.display());
        AttackError::Surrogate {
            path: path.clone(),
            detail: text.strip_prefix(&prefix).unwrap_or(&text).to_string(),
        }
    };
    // The recorded spec must fit the target before the surrogate is built.
    let spec = peek_spec(&path).map_err(surrogate_err)?;
    if spec.input != ctx.target.input || spec.num_classes != ctx.target.num_classes {
        return Err(AttackError::Surrogate {
            path,
            detail: format!(
                "the surrogate takes {} images with {} classes, the target {} with {}",
                spec.input, spec.num_classes, ctx.target.input, ctx.target.num_classes
            ),
        });
    }
    // The weights' hash, recorded with the results: a retrained surrogate crafts other points.
    let sha256 = crate::io::sha256_file_memo(&path).map_err(|e| AttackError::Surrogate {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    let mut out: Vec<Box<dyn Attack>> = Vec::new();
    for &preset in presets {
        let surrogate = load_model(&path, ctx.device, Some(&spec)).map_err(surrogate_err)?;
        let label = if preset == Preset::Cw {
            "Transfer-CW"
        } else {
            "Transfer-PGD"
        };
        out.push(Box::new(Transfer {
            label: label.into(),
            surrogate_path: path.clone(),
            surrogate_sha256: sha256.clone(),
            surrogate: burn::module::Module::valid(&surrogate),
            inner: Box::new(Pgd::preset(preset, o.eps(), o.seed())),
        }));
    }
    Ok(out)
}

/// The settings key of the surrogate checkpoint's SHA-256 in a transfer attack's results.
pub const SURROGATE_SHA256: &str = "surrogate_sha256";

pub struct Transfer {
    pub label: String,
    pub surrogate_path: PathBuf,
    /// SHA-256 of the surrogate's checkpoint file.
    pub surrogate_sha256: String,
    /// The surrogate in eval mode.
    pub surrogate: Model,
    pub inner: Box<dyn Attack>,
}

impl Attack for Transfer {
    fn label(&self) -> String {
        self.label.clone()
    }

    fn settings(&self) -> serde_json::Value {
        serde_json::json!({
            "surrogate": self.surrogate_path.display().to_string(),
            SURROGATE_SHA256: self.surrogate_sha256,
            "surrogate_model": self.surrogate.spec.name,
            "crafted_with": self.inner.label(),
            "inner": self.inner.settings(),
        })
    }

    /// The target model is not queried: points are crafted on the surrogate only.
    fn run(
        &self,
        _target: &dyn Classifier,
        x: Tensor<4>,
        y: Tensor<1, Int>,
        ids: &[u64],
    ) -> Outcome {
        Outcome::plain(self.inner.run(&self.surrogate, x, y, ids).adv)
    }

    fn is_black_box(&self) -> bool {
        true
    }

    fn surrogate(&self) -> Option<&dyn Classifier> {
        Some(&self.surrogate)
    }
}
