//! Helpers shared by the integration tests: known models, files in the real formats, and a
//! naturally trained cnn-small.
#![allow(dead_code)]

use burn::prelude::*;
use rslad::models::Classifier;
use std::io::Write;
use std::path::{Path, PathBuf};

/// logits = flatten(x) · W + b, W: `[d, C]`.
pub struct LinearModel {
    pub w: Tensor<2>,
    pub b: Tensor<1>,
}

impl Classifier for LinearModel {
    fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        let n = x.dims()[0];
        let d = self.w.dims()[0];
        let c = self.w.dims()[1];
        x.reshape([n, d]).matmul(self.w.clone()) + self.b.clone().reshape([1, c])
    }
}

pub fn device() -> Device {
    rslad::backend::init();
    rslad::backend::default_device()
}

pub fn tensor4(data: Vec<f32>, shape: [usize; 4]) -> Tensor<4> {
    Tensor::from_data(TensorData::new(data, shape), &device())
}

pub fn labels(v: &[i64]) -> Tensor<1, Int> {
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &device())
}

pub fn floats<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().unwrap()
}

/// The largest elementwise |a - b| of two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(p, q)| (p - q).abs())
        .fold(0f32, f32::max)
}

/// A small deterministic pseudo-random generator for test data.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next_f32(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32) / (1u64 << 24) as f32
    }

    pub fn below(&mut self, n: u64) -> u64 {
        (self.next_f32() * n as f32) as u64 % n
    }
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rslad-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes an IDX file of u8 with the given dimensions, gzipped if `gz`.
pub fn write_idx(path: &Path, magic: u32, dims: &[u32], data: &[u8], gz: bool) {
    let mut bytes = magic.to_be_bytes().to_vec();
    for d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    if gz {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&bytes).unwrap();
        bytes = enc.finish().unwrap();
    }
    std::fs::write(path, bytes).unwrap();
}

/// A Fashion-MNIST-format folder with `n_train` / `n_test` images whose class is visible in
/// the pixels (a bright bar at row 2·label), so models can learn it.
pub fn fake_fashion(dir: &Path, n_train: usize, n_test: usize, gz: bool) {
    let mut rng = Lcg(42);
    for (prefix, n) in [("train", n_train), ("t10k", n_test)] {
        let mut images = Vec::with_capacity(n * 784);
        let mut labels = Vec::with_capacity(n);
        for _ in 0..n {
            let label = rng.below(10) as u8;
            for r in 0..28 {
                for _ in 0..28 {
                    let noise = (rng.next_f32() * 60.0) as u8;
                    images.push(if r / 2 == label as usize + 2 {
                        200 + noise / 2
                    } else {
                        noise
                    });
                }
            }
            labels.push(label);
        }
        let ext = if gz { ".gz" } else { "" };
        write_idx(
            &dir.join(format!("{prefix}-images-idx3-ubyte{ext}")),
            0x803,
            &[n as u32, 28, 28],
            &images,
            gz,
        );
        write_idx(
            &dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")),
            0x801,
            &[n as u32],
            &labels,
            gz,
        );
    }
}

/// Real Fashion-MNIST, or a clear failure saying how to install it.
pub fn fashion_dir() -> PathBuf {
    let dir = PathBuf::from("/usr/share/datasets/fashion-mnist");
    assert!(
        dir.join("train-images-idx3-ubyte.gz").exists()
            || dir.join("train-images-idx3-ubyte").exists(),
        "this test needs the real Fashion-MNIST: sudo apt-get install -y dataset-fashion-mnist"
    );
    dir
}

/// Runs `rslad` with `args`: (exit code, stdout, stderr).
pub fn rslad(args: &[&str]) -> (i32, String, String) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_rslad"))
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}
