//! Progress bars (indicatif) for training and attacks.

use indicatif::{ProgressBar, ProgressStyle};
use rslad::train::{EpochMetrics, Observer};

pub fn bar(len: u64, prefix: String) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})")
            .expect("template")
            .progress_chars("=> "),
    );
    pb.set_prefix(prefix);
    pb
}

/// Draws one bar per epoch with loss, accuracy and images/s, then a line of metrics.
pub struct TrainProgress {
    bar: Option<ProgressBar>,
}

impl TrainProgress {
    pub fn new() -> Self {
        TrainProgress { bar: None }
    }
}

impl Observer for TrainProgress {
    fn epoch_start(&mut self, epoch: usize, epochs: usize, batches: usize) {
        self.bar = Some(bar(
            batches as u64,
            format!("epoch {}/{}", epoch + 1, epochs),
        ));
    }

    fn batch(&mut self, done: usize, loss: f64, accuracy: f64, images_per_second: f64) {
        if let Some(b) = &self.bar {
            b.set_position(done as u64);
            b.set_message(format!(
                "loss {loss:.4} acc {:.2}% {images_per_second:.0} img/s",
                100.0 * accuracy
            ));
        }
    }

    fn evaluating(&mut self, what: &str) {
        if let Some(b) = &self.bar {
            b.set_message(format!("evaluating {what}..."));
        } else {
            eprintln!("evaluating {what}...");
        }
    }

    fn epoch_end(&mut self, m: &EpochMetrics) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        let robust = m
            .robust_accuracy
            .map(|r| format!(", PGD-20 {:.2}%", 100.0 * r))
            .unwrap_or_default();
        eprintln!(
            "epoch {:>3}  lr {:.4}  loss {:.4}  train acc {:.2}%  test acc {:.2}%{robust}  {:.0}s ({:.0} img/s)",
            m.epoch,
            m.lr,
            m.train_loss,
            100.0 * m.train_accuracy,
            100.0 * m.test_accuracy,
            m.seconds,
            m.images_per_second
        );
    }

    fn message(&mut self, text: &str) {
        eprintln!("{text}");
    }

    fn eval_progress(&mut self, attack: &str, done: usize, total: usize, robust: usize) {
        if self.bar.is_none() {
            self.bar = Some(bar(total as u64, attack.to_string()));
        }
        if let Some(b) = &self.bar {
            b.set_position(done as u64);
            b.set_message(format!(
                "robust {:.2}%",
                100.0 * robust as f64 / done.max(1) as f64
            ));
            if done >= total {
                b.finish();
                self.bar = None;
            }
        }
    }
}
