//! Per-example losses on logits `[B, C]`, each returning `[B]`. Attacks sum them over the batch
//! (a sign-gradient step only sees each example's own term).

use burn::prelude::*;

/// `z[i, idx[i]]` for every row, differentiable in `z`.
pub fn pick(z: Tensor<2>, idx: Tensor<1, Int>) -> Tensor<1> {
    let b = z.dims()[0];
    z.gather(1, idx.reshape([b, 1])).reshape([b])
}

/// Cross-entropy −log softmax(z)_y.
pub fn cross_entropy(z: Tensor<2>, y: Tensor<1, Int>) -> Tensor<1> {
    let log_p = burn::tensor::activation::log_softmax(z, 1);
    pick(log_p, y).neg()
}

/// `max_{i≠y} z_i` and its index. The true class is masked with −∞ (not zeroed), so the result
/// is right when every logit is negative.
pub fn max_other(z: Tensor<2>, y: Tensor<1, Int>) -> (Tensor<1>, Tensor<1, Int>) {
    let [b, c] = z.dims();
    let is_true = y.clone().reshape([b, 1]).one_hot_like(c);
    let masked = z.clone().detach().mask_fill(is_true, f32::NEG_INFINITY);
    let idx = masked.argmax(1).reshape([b]);
    (pick(z, idx.clone()), idx)
}

trait OneHotLike {
    fn one_hot_like(self, classes: usize) -> Tensor<2, Bool>;
}

impl OneHotLike for Tensor<2, Int> {
    /// `[B, 1]` class indices → `[B, C]` mask with one true per row.
    fn one_hot_like(self, classes: usize) -> Tensor<2, Bool> {
        let [b, _] = self.dims();
        let cols = Tensor::<1, Int>::arange(0..classes as i64, &self.device())
            .reshape([1, classes])
            .expand([b, classes]);
        cols.equal(self.expand([b, classes]))
    }
}

/// Carlini–Wagner margin loss for PGD (CW-inf): −max(z_y − max_{i≠y} z_i + κ, 0). Maximising it
/// pushes the margin down until it is below −κ.
pub fn cw_margin(z: Tensor<2>, y: Tensor<1, Int>, kappa: f64) -> Tensor<1> {
    let real = pick(z.clone(), y.clone());
    let (other, _) = max_other(z, y);
    (real - other).add_scalar(kappa).clamp_min(0.0).neg()
}

/// The margin z_y − max_{i≠y} z_i (negative iff misclassified), not differentiated.
pub fn margin(z: Tensor<2>, y: Tensor<1, Int>) -> Tensor<1> {
    let z = z.detach();
    let real = pick(z.clone(), y.clone());
    let (other, _) = max_other(z, y);
    real - other
}

/// Σ_c p_c (log p_c − log softmax(z)_c): KL(p ‖ softmax(z)) per example, as PyTorch's
/// `KLDivLoss(reduction='none')(log_softmax(z), p)` summed over classes (0·log 0 = 0).
pub fn kl_from(target: Tensor<2>, z: Tensor<2>) -> Tensor<1> {
    let b = z.dims()[0];
    let log_q = burn::tensor::activation::log_softmax(z, 1);
    let log_p = target.clone().clamp_min(1e-30).log();
    let terms = target.clone() * (log_p - log_q);
    let terms = terms.mask_fill(target.equal_elem(0.0), 0.0);
    terms.sum_dim(1).reshape([b])
}

/// The logits sorted in descending order (values only, not differentiated through the order:
/// the sort indices come from the detached logits, the values from `z`).
fn sorted_desc(z: Tensor<2>) -> Tensor<2> {
    let idx = z.clone().detach().argsort_descending(1);
    z.gather(1, idx)
}

fn column(z: Tensor<2>, j: usize) -> Tensor<1> {
    let b = z.dims()[0];
    z.slice([0..b, j..j + 1]).reshape([b])
}

/// Untargeted DLR (Croce & Hein 2020): −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3 + 1e−12).
pub fn dlr(z: Tensor<2>, y: Tensor<1, Int>) -> Tensor<1> {
    let s = sorted_desc(z.clone());
    let den = (column(s.clone(), 0) - column(s, 2)).add_scalar(1e-12);
    let (other, _) = max_other(z.clone(), y.clone());
    (pick(z, y) - other).neg() / den
}

/// Targeted DLR: −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2 + 1e−12). Maximising it raises the
/// target's logit above the true one.
pub fn dlr_targeted(z: Tensor<2>, y: Tensor<1, Int>, t: Tensor<1, Int>) -> Tensor<1> {
    let s = sorted_desc(z.clone());
    let den = (column(s.clone(), 0) - (column(s.clone(), 2) + column(s, 3)).mul_scalar(0.5))
        .add_scalar(1e-12);
    (pick(z.clone(), y) - pick(z, t)).neg() / den
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> Device {
        Device::default()
    }

    fn logits(rows: &[[f32; 4]]) -> Tensor<2> {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Tensor::<2>::from_data(TensorData::new(flat, [rows.len(), 4]), &dev())
    }

    fn labels(v: &[i64]) -> Tensor<1, Int> {
        Tensor::<1, Int>::from_data(TensorData::new(v.to_vec(), [v.len()]), &dev())
    }

    fn vec(t: Tensor<1>) -> Vec<f32> {
        t.into_data().try_into_vec_as::<f32>().unwrap()
    }

    fn close(a: &[f32], b: &[f32]) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn cross_entropy_by_hand() {
        let z = logits(&[[1.0, 2.0, 3.0, 4.0]]);
        let lse = (1f32.exp() + 2f32.exp() + 3f32.exp() + 4f32.exp()).ln();
        close(&vec(cross_entropy(z, labels(&[1]))), &[lse - 2.0]);
    }

    #[test]
    fn cw_margin_when_every_logit_is_negative() {
        // Row 1: z_y = -5, best other = -1: margin -4 (misclassified). Row 2: z_y = -1, best
        // other = -3: margin 2. Zeroing the true logit instead of masking it would give 0 as
        // "best other" in both rows.
        let z = logits(&[[-5.0, -1.0, -3.0, -9.0], [-1.0, -5.0, -3.0, -9.0]]);
        let y = labels(&[0, 0]);
        close(&vec(margin(z.clone(), y.clone())), &[-4.0, 2.0]);
        close(&vec(cw_margin(z.clone(), y.clone(), 0.0)), &[0.0, -2.0]);
        close(&vec(cw_margin(z, y, 50.0)), &[-46.0, -52.0]);
    }

    #[test]
    fn kl_matches_definition() {
        let p = logits(&[[0.5, 0.5, 0.0, 0.0]]);
        let z = logits(&[[0.0, 0.0, 0.0, 0.0]]);
        // KL((.5,.5,0,0) || uniform) = 0.5 ln 2 + 0.5 ln 2 = ln 2.
        close(&vec(kl_from(p, z)), &[2f32.ln()]);
    }

    #[test]
    fn dlr_by_hand() {
        let z = logits(&[[4.0, 3.0, 1.0, 0.0]]);
        // y = 0: -(4 - 3) / (4 - 1) = -1/3.  y = 2: -(1 - 4)/(3) = 1.
        close(&vec(dlr(z.clone(), labels(&[0]))), &[-1.0 / 3.0]);
        close(&vec(dlr(z.clone(), labels(&[2]))), &[1.0]);
        // targeted y=0, t=1: -(4-3)/(4 - (1+0)/2) = -1/3.5
        close(
            &vec(dlr_targeted(z, labels(&[0]), labels(&[1]))),
            &[-1.0 / 3.5],
        );
    }
}
