//! Speed of the work that dominates adversarial training and evaluation: a training step of
//! each method (with its 10-step inner attack), one attack step (input gradient, eval mode)
//! and an eval forward, as median time and images/s.

use crate::data::DatasetKind;
use crate::methods::{self, MethodConfig, StepInput, METHODS};
use crate::models::{Classifier, ModelSpec};
use crate::train::sgd::Sgd;
use burn::module::Module;
use burn::optim::GradientsParams;
use burn::prelude::*;
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
    let mut push = |step: String, (ms, peak): (f64, Option<f64>)| {
        rows.push(BenchRow {
            model: spec.name.clone(),
            step,
            batch,
            median_ms: ms,
            images_per_second: batch as f64 / (ms / 1000.0),
            peak_mb: peak,
            pytorch_ms: None,
            ratio: None,
        })
    };
    for method_name in METHODS {
        let mut cfg = MethodConfig::defaults(method_name, dataset, 200);
        cfg.iad_begin = 0;
        let method = methods::build(&cfg)?;
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
    let ctx = crate::attacks::AttackContext {
        eps: dataset.default_eps(),
        seed: 0,
        device,
        target: &model.spec,
    };
    for name in ["fgsm", "pgd-sat", "pgd-trades", "cw", "apgd-ce"] {
        let attack = crate::attacks::parse_list(name, &ctx)
            .map_err(|e| e.to_string())?
            .remove(0);
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
