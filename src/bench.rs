//! Speed of the work that dominates adversarial training and evaluation: a training step of
//! each method (with its 10-step inner attack), one attack step (input gradient, eval mode)
//! and an eval forward, as median time and images/s.

use crate::attacks::apgd::{Apgd, ApgdLoss};
use crate::attacks::autoattack::ComponentRun;
use crate::attacks::observe::Event;
use crate::attacks::{Attack, Pgd, Preset};
use crate::data::{BatchIter, DatasetKind, LoaderConfig};
use crate::methods::{self, MethodConfig, StepInput, METHODS};
use crate::models::{load_model, save_model, Classifier, Model, ModelSpec};
use crate::train::sgd::Sgd;
use burn::module::Module;
use burn::optim::GradientsParams;
use burn::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Bytes in use and the peak since the last reset, where the binary can tell.
pub trait MemoryProbe {
    fn reset_peak(&mut self) {}
    /// Peak bytes allocated since `reset_peak`, above the level at the reset.
    fn peak_above_reset(&self) -> Option<usize> {
        None
    }
}

pub struct NoProbe;
impl MemoryProbe for NoProbe {}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BenchRow {
    pub model: String,
    pub step: String,
    pub batch: usize,
    pub median_ms: f64,
    pub images_per_second: f64,
    pub peak_mb: Option<f64>,
    pub pytorch_ms: Option<f64>,
    /// rslad images/s over PyTorch images/s.
    pub ratio: Option<f64>,
    /// What the row's images were (AA rows: points attacked and still robust).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl BenchRow {
    /// A row from a timing (median ms, peak MB) of `batch` images; no reference yet.
    fn timed(model: &str, step: String, batch: usize, (ms, peak): (f64, Option<f64>)) -> Self {
        BenchRow {
            model: model.to_string(),
            step,
            batch,
            median_ms: ms,
            images_per_second: batch as f64 / (ms / 1000.0),
            peak_mb: peak,
            pytorch_ms: None,
            ratio: None,
            note: None,
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Times `f` (after one warm-up call) `reps` times; returns the median in ms and the peak memory.
fn time(
    reps: usize,
    device: &Device,
    probe: &mut dyn MemoryProbe,
    mut f: impl FnMut(),
) -> (f64, Option<f64>) {
    f();
    device.sync().ok();
    probe.reset_peak();
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let t0 = Instant::now();
        f();
        device.sync().ok();
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    (
        median(times),
        probe.peak_above_reset().map(|b| b as f64 / 1e6),
    )
}

/// Every row for one model at one batch size. The distillation teacher is a second copy of
/// the same architecture (the cost of its forward pass is part of the method).
pub fn run_model(
    name: &str,
    batch: usize,
    reps: usize,
    device: &Device,
    probe: &mut dyn MemoryProbe,
) -> Result<Vec<BenchRow>, String> {
    let arch = name
        .parse()
        .map_err(|e: crate::models::UnknownModel| e.to_string())?;
    let dataset = if matches!(
        arch,
        crate::models::Arch::CnnSmall | crate::models::Arch::CnnLarge
    ) {
        DatasetKind::FashionMnist
    } else {
        DatasetKind::Cifar10
    };
    let spec = ModelSpec::for_dataset(arch, dataset);
    spec.check_size()?;
    device.seed(0);
    let ad = device.clone().autodiff();
    let teacher = spec.build(device).map_err(|e| e.to_string())?.valid();
    let s = spec.input;
    let x = Tensor::<4>::random(
        [batch, s.channels, s.height, s.width],
        burn::tensor::Distribution::Uniform(0.0, 1.0),
        device,
    );
    let labels: Vec<i64> = (0..batch as i64)
        .map(|i| i % spec.num_classes as i64)
        .collect();
    let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [batch]), device);
    let ids: Vec<u64> = (0..batch as u64).collect();
    let mut rows = Vec::new();
    let mut push = |step: String, timing: (f64, Option<f64>)| {
        rows.push(BenchRow::timed(&spec.name, step, batch, timing))
    };
    for method_name in METHODS.iter().map(|m| m.name) {
        let mut cfg = MethodConfig::defaults(method_name, dataset, 200);
        cfg.iad_begin = 0;
        let method = methods::build(&cfg).map_err(|e| e.to_string())?;
        let mut student = spec.build(&ad).map_err(|e| e.to_string())?;
        let mut sgd = Sgd::new(0.9, 2e-4);
        let mut k = 0u64;
        let t = time(reps, device, probe, || {
            let input = StepInput {
                x: x.clone(),
                y: y.clone(),
                ids: &ids,
                epoch: 1,
                seed: k,
                teacher_logits: cfg
                    .needs_teacher()
                    .then(|| methods::teacher_logits(&teacher, x.clone())),
            };
            k += 1;
            let out = methods::step(method.as_ref(), &student, Some(&teacher), &input);
            let grads = GradientsParams::from_grads(out.loss.backward(), &student);
            student = sgd.step(0.01, student.clone(), grads);
        });
        push(format!("train {method_name}"), t);
    }
    let model = spec.build(device).map_err(|e| e.to_string())?.valid();
    let ball = crate::attacks::util::Ball::new(&x, 8.0 / 255.0);
    let t = time(reps, device, probe, || {
        let loss = |z: Tensor<2>| crate::attacks::losses::cross_entropy(z, y.clone());
        let _ = crate::attacks::pgd::ascend(&model, &ball, x.clone(), 2.0 / 255.0, 1, &loss);
    });
    push("attack step".into(), t);
    let t = time(reps, device, probe, || {
        let _ = model.logits(x.clone()).into_data();
    });
    push("eval forward".into(), t);
    // Whole evaluation attacks with a fixed amount of work per image (AutoAttack's targeted
    // parts and Square stop on success, so their cost depends on the model's robustness).
    // APGD drops the points it has broken, and this untrained model's fall at once: its row
    // attacks the model's own predictions in a ball too small to change one, so that all its
    // iterations run on every image, as on a robust model.
    let eps = dataset.default_eps();
    let timed: [(Box<dyn Attack>, bool); 5] = [
        (Box::new(Pgd::preset(Preset::Fgsm, eps, 0)), false),
        (Box::new(Pgd::preset(Preset::Sat, eps, 0)), false),
        (Box::new(Pgd::preset(Preset::Trades, eps, 0)), false),
        (Box::new(Pgd::preset(Preset::Cw, eps, 0)), false),
        (Box::new(Apgd::standard(ApgdLoss::Ce, 1e-6, 0)), true),
    ];
    let predicted = crate::attacks::util::predict(&model, x.clone());
    for (attack, on_predictions) in timed {
        let y = if on_predictions { &predicted } else { &y };
        let t = time(reps.min(2), device, probe, || {
            let _ = attack
                .run(&model, x.clone(), y.clone(), &ids)
                .adv
                .into_data();
        });
        push(format!("attack {}", attack.label()), t);
    }
    Ok(rows)
}

/// One convolution of a model, as the PyTorch reference lists them (`_convs` in the output of
/// bench/pytorch_bench.py, each distinct shape once): where a backend's convolution kernels
/// meet the model, and so where the gap to PyTorch is, when there is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct ConvShape {
    pub in_channels: usize,
    pub out_channels: usize,
    /// The input's height and width.
    pub height: usize,
    pub width: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
}

impl ConvShape {
    /// The row's name, the same on both sides, e.g. `conv 3x3 32->64 @28x28 s2` (` g32` when
    /// grouped); the forward-and-backward row adds ` fwd+bwd`.
    pub fn label(&self) -> String {
        let k = self.kernel;
        let groups = if self.groups > 1 {
            format!(" g{}", self.groups)
        } else {
            String::new()
        };
        format!(
            "conv {k}x{k} {}->{} @{}x{} s{}{groups}",
            self.in_channels, self.out_channels, self.height, self.width, self.stride
        )
    }
}

/// Each convolution alone at `batch`: the forward pass, and the forward pass with the
/// gradients of input and weight that a training step (or an attack step, input only) needs.
pub fn conv_rows(
    model: &str,
    shapes: &[ConvShape],
    batch: usize,
    reps: usize,
    device: &Device,
    probe: &mut dyn MemoryProbe,
) -> Vec<BenchRow> {
    use burn::tensor::module::conv2d;
    use burn::tensor::ops::ConvOptions;
    let ad = device.clone().autodiff();
    let mut rows = Vec::new();
    for c in shapes {
        let options = || {
            ConvOptions::new(
                [c.stride, c.stride],
                [c.padding, c.padding],
                [1, 1],
                c.groups,
            )
        };
        let uniform = burn::tensor::Distribution::Uniform(0.0, 1.0);
        let x_shape = [batch, c.in_channels, c.height, c.width];
        let w_shape = [
            c.out_channels,
            c.in_channels / c.groups.max(1),
            c.kernel,
            c.kernel,
        ];
        let x = Tensor::<4>::random(x_shape, uniform, device);
        let w = Tensor::<4>::random(w_shape, uniform, device);
        let forward = time(reps, device, probe, || {
            let _ = conv2d(x.clone(), w.clone(), None, options());
        });
        let xa = Tensor::<4>::random(x_shape, uniform, &ad).require_grad();
        let wa = Tensor::<4>::random(w_shape, uniform, &ad).require_grad();
        let both = time(reps, device, probe, || {
            let grads = conv2d(xa.clone(), wa.clone(), None, options())
                .sum()
                .backward();
            let _ = (xa.grad(&grads), wa.grad(&grads));
        });
        for (suffix, timing) in [("", forward), (" fwd+bwd", both)] {
            let step = format!("{}{suffix}", c.label());
            rows.push(BenchRow::timed(model, step, batch, timing));
        }
    }
    rows
}

/// Settings of the AutoAttack rows: AA on a trained robust model, since its cost depends on
/// how many points survive each component.
#[derive(Debug, Clone)]
pub struct AaConfig {
    /// The first N Fashion-MNIST test images.
    pub images: usize,
    /// SAT steps of the quickly trained model (when no checkpoint is given).
    pub train_steps: usize,
    pub train_batch: usize,
    /// Shorten APGD/FAB iterations and Square queries (CI's short mode); `None` = standard.
    pub steps: Option<usize>,
    pub queries: Option<usize>,
    /// Evaluate these weights instead of training.
    pub checkpoint: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    /// Where the quickly trained models are kept between runs.
    pub cache_dir: PathBuf,
    pub seed: u64,
}

/// One AutoAttack run as the bench measured it.
#[derive(Debug, Clone)]
pub struct AaRun {
    pub model: String,
    pub checkpoint: PathBuf,
    pub eps: f64,
    /// The attack string, e.g. `aa` or `aa:steps=3:queries=20`.
    pub attack: String,
    pub images: Vec<f32>,
    pub labels: Vec<i64>,
    pub shape: [usize; 4],
    pub clean_correct: usize,
    pub seconds: f64,
    pub components: Vec<ComponentRun>,
}

impl AaRun {
    pub fn robust(&self) -> usize {
        self.components
            .last()
            .map(|c| c.robust.iter().filter(|r| **r).count())
            .unwrap_or(self.clean_correct)
    }
}

/// The model the AA rows attack: `cfg.checkpoint`, or SAT-trained for `cfg.train_steps` steps
/// on Fashion-MNIST and cached under `cfg.cache_dir` (trained once per setting).
pub fn robust_model(
    name: &str,
    cfg: &AaConfig,
    device: &Device,
) -> Result<(Model, PathBuf), String> {
    if let Some(path) = &cfg.checkpoint {
        let model = load_model(path, device, None).map_err(|e| e.to_string())?;
        return Ok((model, path.clone()));
    }
    let arch: crate::models::Arch = name
        .parse()
        .map_err(|e: crate::models::UnknownModel| e.to_string())?;
    let kind = DatasetKind::FashionMnist;
    let spec = ModelSpec::for_dataset(arch, kind);
    // Another data folder (a test's fake data) gets its own cached model.
    let data = match &cfg.data_dir {
        Some(dir) => {
            use sha2::{Digest, Sha256};
            let h = Sha256::digest(dir.display().to_string().as_bytes());
            format!("-data{:02x}{:02x}{:02x}{:02x}", h[0], h[1], h[2], h[3])
        }
        None => String::new(),
    };
    let path = cfg.cache_dir.join(format!(
        "{}-{}{data}-sat-{}x{}-seed{}.safetensors",
        spec.name,
        kind.name(),
        cfg.train_steps,
        cfg.train_batch,
        cfg.seed
    ));
    if path.exists() {
        let model = load_model(&path, device, Some(&spec)).map_err(|e| e.to_string())?;
        return Ok((model, path));
    }
    let train = crate::data::load(
        kind,
        cfg.data_dir.as_deref(),
        crate::data::Split::Train,
        Some(cfg.train_steps * cfg.train_batch),
    )
    .map_err(|e| e.to_string())?;
    let train = Arc::new(train);
    device.seed(cfg.seed);
    let ad = device.clone().autodiff();
    let mut student = spec.build(&ad).map_err(|e| e.to_string())?;
    let method_cfg = MethodConfig::defaults("sat", kind, 1);
    let method = methods::build(&method_cfg).map_err(|e| e.to_string())?;
    let mut sgd = Sgd::new(0.9, 5e-4);
    let mut done = 0;
    let mut epoch = 0;
    while done < cfg.train_steps {
        let loader = LoaderConfig {
            batch_size: cfg.train_batch,
            shuffle: true,
            augment: crate::data::Augment::NONE,
            seed: cfg.seed,
            epoch,
        };
        for batch in BatchIter::new(train.clone(), loader) {
            if done == cfg.train_steps {
                break;
            }
            let (x, y) = batch.to_tensors(train.shape, device);
            let ids: Vec<u64> = batch.indices.iter().map(|&i| i as u64).collect();
            let input = StepInput {
                x,
                y,
                ids: &ids,
                epoch,
                seed: cfg.seed ^ done as u64,
                teacher_logits: None,
            };
            let out = methods::step(method.as_ref(), &student, None, &input);
            let grads = GradientsParams::from_grads(out.loss.backward(), &student);
            student = sgd.step(0.05, student.clone(), grads);
            done += 1;
        }
        epoch += 1;
    }
    let model = student.valid();
    save_model(&model, &path, &[("bench", "SAT quick model".to_string())])
        .map_err(|e| e.to_string())?;
    Ok((model, path))
}

/// The AA rows attack Fashion-MNIST: `spec` (of `checkpoint`) must take its images.
pub fn check_aa_fit(checkpoint: &Path, spec: &ModelSpec) -> Result<(), String> {
    let kind = DatasetKind::FashionMnist;
    if spec.input != kind.shape() || spec.num_classes != kind.num_classes() {
        return Err(format!(
            "{}: the AA rows run on Fashion-MNIST; this {} takes {} images with {} classes",
            checkpoint.display(),
            spec.name,
            spec.input,
            spec.num_classes
        ));
    }
    Ok(())
}

/// Standard AutoAttack (or a shortened one) on the first `cfg.images` Fashion-MNIST test
/// images, each component timed.
pub fn run_autoattack(
    model: &Model,
    checkpoint: &Path,
    cfg: &AaConfig,
    device: &Device,
    observer: &mut dyn FnMut(&Event),
) -> Result<AaRun, String> {
    let kind = DatasetKind::FashionMnist;
    check_aa_fit(checkpoint, &model.spec)?;
    let test = crate::data::load(
        kind,
        cfg.data_dir.as_deref(),
        crate::data::Split::Test,
        Some(cfg.images),
    )
    .map_err(|e| e.to_string())?;
    let test = Arc::new(test);
    let batch = BatchIter::new(test.clone(), LoaderConfig::sequential(test.len()))
        .next()
        .ok_or("no test images")?;
    let (x, y) = batch.to_tensors(test.shape, device);
    let ids: Vec<u64> = (0..test.len() as u64).collect();
    let eps = kind.default_eps();
    let mut attack = "aa".to_string();
    if let Some(s) = cfg.steps {
        attack += &format!(":steps={s}");
    }
    if let Some(q) = cfg.queries {
        attack += &format!(":queries={q}");
    }
    let ctx = crate::attacks::AttackContext {
        eps,
        seed: cfg.seed,
        device,
        target: &model.spec,
    };
    let aa = crate::attacks::parse_list(&attack, &ctx)
        .map_err(|e| e.to_string())?
        .remove(0);
    let valid = model.valid();
    let mut components: Vec<ComponentRun> = Vec::new();
    let mut started: Option<(String, usize, Instant)> = None;
    let t0 = Instant::now();
    let outcome = aa.run_observed(&valid, x.clone(), y.clone(), &ids, &mut |e| {
        match e {
            Event::Start {
                component,
                attacked,
            } => started = Some((component.to_string(), *attacked, Instant::now())),
            Event::End { component, .. } => {
                if let Some((label, attacked, t)) = started.take() {
                    debug_assert_eq!(&label, component);
                    components.push(ComponentRun {
                        label,
                        attacked,
                        seconds: t.elapsed().as_secs_f64(),
                        robust: Vec::new(),
                    });
                }
            }
            Event::Step { .. } => {}
        }
        observer(e)
    });
    let seconds = t0.elapsed().as_secs_f64();
    for (c, (_, robust)) in components.iter_mut().zip(outcome.stages) {
        c.robust = robust;
    }
    let clean_correct =
        crate::attacks::util::to_bools(crate::attacks::util::correct(&valid, x.clone(), y))
            .iter()
            .filter(|b| **b)
            .count();
    Ok(AaRun {
        model: model.spec.name.clone(),
        checkpoint: checkpoint.to_path_buf(),
        eps,
        attack,
        images: crate::attacks::util::to_f32s(x.clone()),
        labels: batch.labels.clone(),
        shape: x.dims(),
        clean_correct,
        seconds,
        components,
    })
}

/// The AA rows of the table: the whole run (images/s over every evaluated image) and each
/// component (images/s over the points it attacked).
pub fn aa_rows(run: &AaRun) -> Vec<BenchRow> {
    let mut rows = vec![BenchRow {
        model: run.model.clone(),
        step: "AA".into(),
        batch: run.shape[0],
        median_ms: run.seconds * 1000.0,
        images_per_second: run.shape[0] as f64 / run.seconds,
        peak_mb: None,
        pytorch_ms: None,
        ratio: None,
        note: Some(format!(
            "clean {} → robust {}",
            run.clean_correct,
            run.robust()
        )),
    }];
    for c in &run.components {
        rows.push(BenchRow {
            model: run.model.clone(),
            step: format!("AA {}", c.label),
            batch: c.attacked,
            median_ms: c.seconds * 1000.0,
            images_per_second: c.attacked as f64 / c.seconds.max(1e-9),
            peak_mb: None,
            pytorch_ms: None,
            ratio: None,
            note: Some(format!(
                "attacked {} → robust {}",
                c.attacked,
                c.robust.iter().filter(|r| **r).count()
            )),
        });
    }
    rows
}
