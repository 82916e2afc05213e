//! The KL divergences of the distillation losses, with the reductions the official codes use
//! (they differ, and the difference matters: see docs/spec/methods.md).

use burn::prelude::*;
use burn::tensor::activation::{log_softmax, softmax};

/// How a KL over `[B, C]` is reduced to a scalar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KlReduction {
    /// Mean over all B·C elements (PyTorch `KLDivLoss()` default, RSLAD's `torch.mean`).
    Official,
    /// Sum over classes, mean over the batch: the textbook per-example KL.
    Batchmean,
}

impl std::str::FromStr for KlReduction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "official" => Ok(KlReduction::Official),
            "batchmean" => Ok(KlReduction::Batchmean),
            _ => Err(format!("kl reduction '{s}' is not official or batchmean")),
        }
    }
}

impl std::fmt::Display for KlReduction {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(match self {
            KlReduction::Official => "official",
            KlReduction::Batchmean => "batchmean",
        })
    }
}

crate::units::serde_as_text!(KlReduction);

fn reduce(elements: Tensor<2>, reduction: KlReduction) -> Tensor<1> {
    let b = elements.dims()[0];
    match reduction {
        KlReduction::Official => elements.mean(),
        KlReduction::Batchmean => elements.sum().div_scalar(b as f64),
    }
}

/// Elementwise p·(log p − log q) with p = softmax(target/τ) (a constant) and
/// log q = log_softmax(z/τ): PyTorch's `KLDivLoss(reduction='none')(log q, p)`.
pub fn kl_elements(target_logits: Tensor<2>, z: Tensor<2>, temperature: f64) -> Tensor<2> {
    let p = softmax(target_logits.div_scalar(temperature), 1);
    let log_p = p.clone().clamp_min(1e-30).log();
    let log_q = log_softmax(z.div_scalar(temperature), 1);
    let e = p.clone() * (log_p - log_q);
    e.mask_fill(p.equal_elem(0.0), 0.0)
}

/// KL(softmax(target/τ) ‖ softmax(z/τ)) reduced; `target_logits` are treated as constants.
pub fn kl_div(
    target_logits: Tensor<2>,
    z: Tensor<2>,
    temperature: f64,
    reduction: KlReduction,
) -> Tensor<1> {
    reduce(kl_elements(target_logits, z, temperature), reduction)
}

/// RSLAD's loss term in the official code (`rslad_loss.py`'s `kl_loss`): elementwise
/// −log_softmax(S)·softmax(T) + log(softmax(T) + 1e−5)·softmax(T), then reduced.
pub fn rslad_kl(teacher_logits: Tensor<2>, z: Tensor<2>, reduction: KlReduction) -> Tensor<1> {
    match reduction {
        KlReduction::Official => {
            let p = softmax(teacher_logits, 1);
            let log_q = log_softmax(z, 1);
            let e = log_q.neg() * p.clone() + p.clone().add_scalar(1e-5).log() * p;
            e.mean()
        }
        KlReduction::Batchmean => kl_div(teacher_logits, z, 1.0, KlReduction::Batchmean),
    }
}

/// Per-example KL(softmax(a) ‖ softmax(b)) with gradients through both sides (IAD's
/// introspection term, TRADES' robust term).
pub fn kl_both(a: Tensor<2>, b: Tensor<2>) -> Tensor<1> {
    let n = a.dims()[0];
    let log_p = log_softmax(a, 1);
    let p = log_p.clone().exp();
    let log_q = log_softmax(b, 1);
    (p * (log_p - log_q)).sum_dim(1).reshape([n])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(rows: &[[f32; 3]]) -> Tensor<2> {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Tensor::from_data(TensorData::new(flat, [rows.len(), 3]), &Device::default())
    }

    fn scalar(x: Tensor<1>) -> f64 {
        x.into_scalar::<f32>() as f64
    }

    fn softmax3(z: [f64; 3]) -> [f64; 3] {
        let m = z.iter().cloned().fold(f64::MIN, f64::max);
        let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
        let s: f64 = e.iter().sum();
        [e[0] / s, e[1] / s, e[2] / s]
    }

    /// KL values and reductions computed by hand on fixed logits.
    #[test]
    fn reductions_by_hand() {
        let teacher = [[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]];
        let student = [[0.0, 1.0, 0.0], [1.0, -1.0, 2.0]];
        let mut per_example = [0f64; 2];
        let mut rslad_elems = 0f64;
        for i in 0..2 {
            let p = softmax3(teacher[i].map(|v| v as f64));
            let q = softmax3(student[i].map(|v| v as f64));
            for c in 0..3 {
                per_example[i] += p[c] * (p[c].ln() - q[c].ln());
                rslad_elems += -q[c].ln() * p[c] + (p[c] + 1e-5).ln() * p[c];
            }
        }
        let (tt, ss) = (t(&teacher), t(&student));
        let official = scalar(kl_div(tt.clone(), ss.clone(), 1.0, KlReduction::Official));
        let batchmean = scalar(kl_div(tt.clone(), ss.clone(), 1.0, KlReduction::Batchmean));
        assert!((official - (per_example[0] + per_example[1]) / 6.0).abs() < 1e-6);
        assert!((batchmean - (per_example[0] + per_example[1]) / 2.0).abs() < 1e-6);
        let r = scalar(rslad_kl(tt.clone(), ss.clone(), KlReduction::Official));
        assert!(
            (r - rslad_elems / 6.0).abs() < 1e-6,
            "{r} vs {}",
            rslad_elems / 6.0
        );
        let both = kl_both(tt, ss)
            .into_data()
            .try_into_vec_as::<f32>()
            .unwrap();
        assert!((both[0] as f64 - per_example[0]).abs() < 1e-6);
        // Temperature divides the logits before the softmax.
        let hot = scalar(kl_div(
            t(&teacher),
            t(&student),
            2.0,
            KlReduction::Batchmean,
        ));
        let mut expect = 0.0;
        for i in 0..2 {
            let p = softmax3(teacher[i].map(|v| v as f64 / 2.0));
            let q = softmax3(student[i].map(|v| v as f64 / 2.0));
            for c in 0..3 {
                expect += p[c] * (p[c].ln() - q[c].ln()) / 2.0;
            }
        }
        assert!((hot - expect).abs() < 1e-6);
    }
}
