//! Randomness of attacks, drawn on the host per example: the noise an example gets depends
//! only on (seed, purpose, example id), never on the batch it sits in. So results do not
//! change with the batch size, and a sharded evaluation reproduces an unsharded one.

use burn::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A generator for one example and one use (`purpose` separates restarts, targets, ...).
pub fn example_rng(seed: u64, purpose: u64, id: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ purpose.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    rng.set_stream(id);
    rng
}

/// How noise is drawn.
#[derive(Debug, Clone, Copy)]
pub enum Noise {
    /// Uniform in [low, high).
    Uniform(f32, f32),
    /// Normal with this standard deviation.
    Gaussian(f32),
    /// ±1 with equal probability.
    Sign,
}

/// A `[B, C, H, W]` tensor of noise, example `i` drawn from `example_rng(seed, purpose, ids[i])`.
pub fn noise(
    seed: u64,
    purpose: u64,
    ids: &[u64],
    shape: [usize; 4],
    kind: Noise,
    device: &Device,
) -> Tensor<4> {
    assert_eq!(ids.len(), shape[0], "one id per example");
    let per = shape[1] * shape[2] * shape[3];
    let mut data = Vec::with_capacity(ids.len() * per);
    for &id in ids {
        let mut rng = example_rng(seed, purpose, id);
        for _ in 0..per {
            data.push(draw(&mut rng, kind));
        }
    }
    Tensor::from_data(TensorData::new(data, shape), device)
}

pub fn draw(rng: &mut ChaCha8Rng, kind: Noise) -> f32 {
    match kind {
        Noise::Uniform(lo, hi) => lo + (hi - lo) * rng.random::<f32>(),
        Noise::Gaussian(std) => {
            // Box–Muller; rand_distr is not needed for this one use.
            let u1: f32 = rng.random::<f32>().max(f32::MIN_POSITIVE);
            let u2: f32 = rng.random();
            std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
        }
        Noise::Sign => {
            if rng.random_bool(0.5) {
                1.0
            } else {
                -1.0
            }
        }
    }
}
