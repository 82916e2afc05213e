//! Tensor helpers shared by the attacks.

use crate::models::Classifier;
use burn::prelude::*;

/// Predicted class per example (no graph).
pub fn predict(model: &dyn Classifier, x: Tensor<4>) -> Tensor<1, Int> {
    let z = model.logits(x).detach();
    let b = z.dims()[0];
    z.argmax(1).reshape([b])
}

/// Whether each example is classified as its label.
pub fn correct(model: &dyn Classifier, x: Tensor<4>, y: Tensor<1, Int>) -> Tensor<1, Bool> {
    predict(model, x).equal(y)
}

pub fn to_bools(t: Tensor<1, Bool>) -> Vec<bool> {
    t.into_data()
        .try_into_vec_as::<bool>()
        .expect("bool tensor")
}

pub fn to_f32s<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .try_into_vec_as::<f32>()
        .expect("float tensor")
}

pub fn to_i64s(t: Tensor<1, Int>) -> Vec<i64> {
    t.into_data().try_into_vec_as::<i64>().expect("int tensor")
}

pub fn index_tensor(idx: &[usize], device: &Device) -> Tensor<1, Int> {
    let v: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(v, [idx.len()]), device)
}

/// A `[B]` mask broadcast to the shape of a `[B, C, H, W]` tensor.
pub fn rows_mask(mask: Tensor<1, Bool>, like: &Tensor<4>) -> Tensor<4, Bool> {
    let [b, c, h, w] = like.dims();
    mask.reshape([b, 1, 1, 1]).expand([b, c, h, w])
}

/// Per-example values `[B]` broadcast against `[B, C, H, W]`.
pub fn rows(v: Tensor<1>, like: &Tensor<4>) -> Tensor<4> {
    let b = like.dims()[0];
    v.reshape([b, 1, 1, 1])
}

/// `where(mask, a, b)` per example.
pub fn choose_rows(mask: Tensor<1, Bool>, a: Tensor<4>, b: Tensor<4>) -> Tensor<4> {
    let m = rows_mask(mask, &a);
    b.mask_where(m, a)
}

/// `where(mask, a, b)` for `[B]` vectors.
pub fn choose(mask: Tensor<1, Bool>, a: Tensor<1>, b: Tensor<1>) -> Tensor<1> {
    b.mask_where(mask, a)
}

/// Per-example L-inf distance between two batches.
pub fn linf(a: Tensor<4>, b: Tensor<4>) -> Tensor<1> {
    let n = a.dims()[0];
    (a - b)
        .abs()
        .reshape([n as i32, -1])
        .max_dim(1)
        .reshape([n])
}

/// Π(x') = clip(clip(x', x − ε, x + ε), 0, 1), with the bounds precomputed once per attack.
#[derive(Clone)]
pub struct Ball {
    pub lo: Tensor<4>,
    pub hi: Tensor<4>,
}

impl Ball {
    pub fn new(x: &Tensor<4>, eps: f64) -> Self {
        Ball {
            lo: x.clone().sub_scalar(eps).clamp_min(0.0),
            hi: x.clone().add_scalar(eps).clamp_max(1.0),
        }
    }

    pub fn project(&self, x: Tensor<4>) -> Tensor<4> {
        x.max_pair(self.lo.clone()).min_pair(self.hi.clone())
    }

    pub fn select(&self, idx: Tensor<1, Int>) -> Self {
        Ball {
            lo: self.lo.clone().select(0, idx.clone()),
            hi: self.hi.clone().select(0, idx),
        }
    }
}

/// Gradient of `loss(logits(x))` w.r.t. `x`, with no gradient for weights when the model is a
/// `valid()` snapshot. Returns the per-example loss values as well.
pub fn input_grad(
    model: &dyn Classifier,
    x: Tensor<4>,
    loss: &dyn Fn(Tensor<2>) -> Tensor<1>,
) -> (Tensor<4>, Tensor<1>, Tensor<2>) {
    let xa = x.autodiff().require_grad();
    let logits = model.logits(xa.clone());
    let per_example = loss(logits.clone());
    let grads = per_example.clone().sum().backward();
    let g = xa.grad(&grads).expect("input gradient");
    (
        g,
        per_example.detach().without_autodiff(),
        logits.detach().without_autodiff(),
    )
}

/// Stack at most this many rows (example × target class) in one targeted run by default: the
/// autodiff graph of a stacked batch grows with its rows.
pub const MAX_STACKED_ROWS: usize = 512;

/// The adversarial batch of a stacked targeted attack: each example's settled point (the first
/// misclassified one found), or its clean point `x_host` (row-major, `n` values per example)
/// where none was found; and which examples were fooled.
pub fn settled_batch(
    settled: &[Option<Vec<f32>>],
    x_host: &[f32],
    shape: [usize; 4],
    device: &Device,
) -> (Tensor<4>, Tensor<1, Bool>) {
    let n = shape[1] * shape[2] * shape[3];
    let mut out = Vec::with_capacity(settled.len() * n);
    let mut ok = Vec::with_capacity(settled.len());
    for (e, adv) in settled.iter().enumerate() {
        match adv {
            Some(v) => out.extend_from_slice(v),
            None => out.extend_from_slice(&x_host[e * n..(e + 1) * n]),
        }
        ok.push(adv.is_some());
    }
    (
        Tensor::from_data(TensorData::new(out, shape), device),
        Tensor::from_data(TensorData::new(ok, [settled.len()]), device),
    )
}
