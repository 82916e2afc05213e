//! Progress bars (indicatif) for training and attacks.

use indicatif::{ProgressBar, ProgressStyle};
use rslad::eval::{Progress, Stage};
use rslad::train::{EpochMetrics, Observer};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How often a line is printed when stderr is not a terminal (logs, cluster jobs).
const LINE_EVERY: Duration = Duration::from_secs(5);

/// `1m05s`, `42s`.
pub fn duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s / 60 % 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// The component running inside a batch: its name, points still robust, work done and an ETA.
pub fn stage_text(stage: &Stage) -> String {
    let eta = stage
        .eta()
        .map(|s| format!(", ETA {}", duration(s)))
        .unwrap_or_default();
    format!(
        "{}: {}/{} still robust, {:.0}% done{eta}",
        stage.component,
        stage.robust,
        stage.attacked,
        100.0 * stage.done as f64 / stage.total.max(1) as f64
    )
}

/// Progress of `rslad eval` (and of the evaluations inside `rslad experiment`): a bar per
/// attack on a terminal, otherwise a line at most every few seconds and one per finished attack.
pub struct EvalReporter {
    tty: bool,
    bars: HashMap<String, ProgressBar>,
    last_line: Option<Instant>,
    started: HashMap<String, Instant>,
}

impl EvalReporter {
    pub fn new() -> Self {
        EvalReporter {
            tty: std::io::stderr().is_terminal(),
            bars: HashMap::new(),
            last_line: None,
            started: HashMap::new(),
        }
    }

    pub fn update(&mut self, p: &Progress) {
        self.report(p.attack, p.done, p.total, p.robust, p.stage.as_ref());
    }

    fn report(
        &mut self,
        attack: &str,
        done: usize,
        total: usize,
        robust: usize,
        stage: Option<&Stage>,
    ) {
        let started = *self
            .started
            .entry(attack.to_string())
            .or_insert_with(Instant::now);
        let robust_text = format!("robust {:.2}%", 100.0 * robust as f64 / done.max(1) as f64);
        if self.tty {
            let b = self
                .bars
                .entry(attack.to_string())
                .or_insert_with(|| bar(total as u64, attack.to_string()));
            b.set_position(done as u64);
            match stage {
                Some(s) => b.set_message(format!("{robust_text} | {}", stage_text(s))),
                None => b.set_message(robust_text),
            }
            if done == total && stage.is_none() {
                b.finish();
                self.bars.remove(attack);
                self.started.remove(attack);
            }
            return;
        }
        let finished = done == total && stage.is_none();
        let due = self.last_line.is_none_or(|t| t.elapsed() >= LINE_EVERY);
        if !(finished || due) {
            return;
        }
        self.last_line = Some(Instant::now());
        let elapsed = started.elapsed().as_secs_f64();
        let examples = if done > 0 && !finished {
            // Whole-attack ETA from the batches done (none before the first batch ends).
            let eta = elapsed * (total - done) as f64 / done as f64;
            format!(
                "{done}/{total} examples ({robust_text}), ETA {} after this batch",
                duration(eta)
            )
        } else {
            format!("{done}/{total} examples ({robust_text})")
        };
        match stage {
            Some(s) => eprintln!(
                "{attack}: {examples}; batch: {} [{}]",
                stage_text(s),
                duration(elapsed)
            ),
            None if finished => {
                eprintln!("{attack}: done, {examples} in {}", duration(elapsed));
                self.started.remove(attack);
            }
            None => eprintln!("{attack}: {examples} [{}]", duration(elapsed)),
        }
    }
}

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

/// Draws one bar per epoch with loss, accuracy and images/s, then a line of metrics; the
/// evaluations report through an [`EvalReporter`].
pub struct TrainProgress {
    bar: Option<ProgressBar>,
    eval: EvalReporter,
}

impl TrainProgress {
    pub fn new() -> Self {
        TrainProgress {
            bar: None,
            eval: EvalReporter::new(),
        }
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
        self.eval.report(attack, done, total, robust, None);
    }

    fn eval_stage(&mut self, progress: &Progress) {
        self.eval.update(progress);
    }
}
