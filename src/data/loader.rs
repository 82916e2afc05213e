//! Seeded shuffling, batching and augmentation, on a background thread.
//!
//! Everything random here is a function of `(seed, epoch)`, so a resumed run sees exactly the
//! batches the uninterrupted run would have seen.

use super::Dataset;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Training-time augmentation (spec: random 32×32 crop of the image zero-padded by 4, then a
/// horizontal flip with probability 0.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Augment {
    pub crop_padding: usize,
    pub horizontal_flip: bool,
}

impl Augment {
    pub const NONE: Augment = Augment {
        crop_padding: 0,
        horizontal_flip: false,
    };

    pub fn is_none(&self) -> bool {
        self.crop_padding == 0 && !self.horizontal_flip
    }
}

/// How one pass over a dataset is cut into batches.
#[derive(Debug, Clone, Copy)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// Shuffle with a permutation drawn from `(seed, epoch)`; the order is fixed otherwise.
    pub shuffle: bool,
    pub augment: Augment,
    pub seed: u64,
    pub epoch: usize,
}

impl LoaderConfig {
    /// Fixed order, no augmentation: for evaluation.
    pub fn sequential(batch_size: usize) -> Self {
        LoaderConfig {
            batch_size,
            shuffle: false,
            augment: Augment::NONE,
            seed: 0,
            epoch: 0,
        }
    }
}

/// One batch on the host: pixels in [0,1] as `[n, C, H, W]` row-major, labels, and the indices
/// of its examples in the dataset.
#[derive(Debug, Clone)]
pub struct Batch {
    pub images: Vec<f32>,
    pub labels: Vec<i64>,
    pub indices: Vec<usize>,
}

impl Batch {
    /// Images `[n, C, H, W]` and labels `[n]` on `device`.
    pub fn to_tensors(
        &self,
        shape: super::ImageShape,
        device: &burn::prelude::Device,
    ) -> (
        burn::prelude::Tensor<4>,
        burn::prelude::Tensor<1, burn::prelude::Int>,
    ) {
        use burn::prelude::{Tensor, TensorData};
        let n = self.len();
        let x = Tensor::from_data(
            TensorData::new(
                self.images.clone(),
                [n, shape.channels, shape.height, shape.width],
            ),
            device,
        );
        let y = Tensor::from_data(TensorData::new(self.labels.clone(), [n]), device);
        (x, y)
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Batches of one epoch, prepared two ahead by a worker thread.
pub struct BatchIter {
    receiver: Receiver<Batch>,
    worker: Option<JoinHandle<()>>,
    pub num_batches: usize,
}

impl BatchIter {
    pub fn new(dataset: Arc<Dataset>, config: LoaderConfig) -> Self {
        assert!(config.batch_size > 0, "batch size must be positive");
        let n = dataset.len();
        let num_batches = n.div_ceil(config.batch_size);
        let (sender, receiver) = sync_channel(2);
        let worker = std::thread::Builder::new()
            .name("rslad-loader".into())
            .spawn(move || {
                let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
                rng.set_stream(config.epoch as u64);
                let mut order: Vec<usize> = (0..n).collect();
                if config.shuffle {
                    order.shuffle(&mut rng);
                }
                for chunk in order.chunks(config.batch_size) {
                    let batch = make_batch(&dataset, chunk, config.augment, &mut rng);
                    if sender.send(batch).is_err() {
                        return; // the consumer stopped early
                    }
                }
            })
            .expect("cannot spawn the data loader thread");
        BatchIter {
            receiver,
            worker: Some(worker),
            num_batches,
        }
    }
}

impl Iterator for BatchIter {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        match self.receiver.recv() {
            Ok(batch) => Some(batch),
            Err(_) => {
                if let Some(worker) = self.worker.take() {
                    if let Err(panic) = worker.join() {
                        std::panic::resume_unwind(panic);
                    }
                }
                None
            }
        }
    }
}

fn make_batch(
    dataset: &Dataset,
    indices: &[usize],
    augment: Augment,
    rng: &mut ChaCha8Rng,
) -> Batch {
    let shape = dataset.shape;
    let (c, h, w) = (shape.channels, shape.height, shape.width);
    let mut images = vec![0f32; indices.len() * shape.len()];
    let mut labels = Vec::with_capacity(indices.len());
    for (slot, &index) in indices.iter().enumerate() {
        let src = dataset.image(index);
        let dst = &mut images[slot * shape.len()..(slot + 1) * shape.len()];
        labels.push(dataset.labels[index] as i64);
        if augment.is_none() {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = s as f32 / 255.0;
            }
            continue;
        }
        let pad = augment.crop_padding as isize;
        let (dy, dx) = if pad > 0 {
            (
                rng.random_range(0..=2 * pad as i64) as isize - pad,
                rng.random_range(0..=2 * pad as i64) as isize - pad,
            )
        } else {
            (0, 0)
        };
        let flip = augment.horizontal_flip && rng.random_bool(0.5);
        for ch in 0..c {
            for y in 0..h {
                let sy = y as isize + dy;
                for x in 0..w {
                    // Crop first (from the zero-padded image), then flip the crop.
                    let cx = if flip { w - 1 - x } else { x };
                    let sx = cx as isize + dx;
                    let v = if sy >= 0 && sy < h as isize && sx >= 0 && sx < w as isize {
                        src[(ch * h + sy as usize) * w + sx as usize] as f32 / 255.0
                    } else {
                        0.0
                    };
                    dst[(ch * h + y) * w + x] = v;
                }
            }
        }
    }
    Batch {
        images,
        labels,
        indices: indices.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{DatasetKind, ImageShape};

    fn toy(n: usize) -> Arc<Dataset> {
        let shape = ImageShape {
            channels: 1,
            height: 4,
            width: 4,
        };
        Arc::new(Dataset {
            kind: DatasetKind::FashionMnist,
            shape,
            num_classes: 10,
            images: (0..n * 16).map(|i| (i % 251) as u8).collect(),
            labels: (0..n).map(|i| (i % 10) as u8).collect(),
        })
    }

    #[test]
    fn every_example_once_per_epoch_and_seeded() {
        let data = toy(23);
        let cfg = LoaderConfig {
            batch_size: 5,
            shuffle: true,
            augment: Augment::NONE,
            seed: 7,
            epoch: 3,
        };
        let a: Vec<Batch> = BatchIter::new(data.clone(), cfg).collect();
        assert_eq!(a.len(), 5);
        assert_eq!(a.last().unwrap().len(), 3);
        let mut seen: Vec<usize> = a.iter().flat_map(|b| b.indices.clone()).collect();
        assert_ne!(seen, (0..23).collect::<Vec<_>>(), "shuffled");
        seen.sort();
        assert_eq!(seen, (0..23).collect::<Vec<_>>());
        let b: Vec<Batch> = BatchIter::new(data.clone(), cfg).collect();
        assert_eq!(
            a.iter().map(|x| x.indices.clone()).collect::<Vec<_>>(),
            b.iter().map(|x| x.indices.clone()).collect::<Vec<_>>()
        );
        let other = LoaderConfig { epoch: 4, ..cfg };
        let c: Vec<Batch> = BatchIter::new(data, other).collect();
        assert_ne!(a[0].indices, c[0].indices, "another epoch, another order");
    }

    #[test]
    fn pixels_scaled_to_unit_interval() {
        let data = toy(2);
        let batch = BatchIter::new(data.clone(), LoaderConfig::sequential(2))
            .next()
            .unwrap();
        assert_eq!(batch.images.len(), 32);
        for (v, &b) in batch.images.iter().zip(&data.images) {
            assert_eq!(*v, b as f32 / 255.0);
        }
        assert_eq!(batch.labels, vec![0, 1]);
    }

    #[test]
    fn crop_and_flip_move_pixels_within_padding() {
        let data = toy(50);
        let cfg = LoaderConfig {
            batch_size: 50,
            shuffle: false,
            augment: Augment {
                crop_padding: 1,
                horizontal_flip: true,
            },
            seed: 1,
            epoch: 0,
        };
        let batch = BatchIter::new(data.clone(), cfg).next().unwrap();
        let mut changed = 0;
        let mut zeros_at_border = 0;
        for i in 0..50 {
            let out = &batch.images[i * 16..(i + 1) * 16];
            let src: Vec<f32> = data.image(i).iter().map(|&b| b as f32 / 255.0).collect();
            if out != src.as_slice() {
                changed += 1;
            }
            // Every output pixel is either padding (0) or some source pixel.
            for &v in out {
                assert!(v == 0.0 || src.contains(&v));
                if v == 0.0 && !src.contains(&0.0) {
                    zeros_at_border += 1;
                }
            }
        }
        assert!(
            changed > 25,
            "most images are moved or flipped, got {changed}"
        );
        assert!(zeros_at_border > 0, "some crops show the zero padding");
    }
}
