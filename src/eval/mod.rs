//! Robustness evaluation: runs a list of attacks over a slice of a test set, keeps each
//! example's outcome, and flags numbers that cannot be trusted (Carlini et al. 2019's checklist).
//!
//! Each attack runs only on the examples the model classifies correctly without attack; an
//! example counts as robust only if the model still classifies the returned adversarial point
//! correctly, judged here, on the points the attack returned.

mod checkpoint;
mod merge;
pub use merge::{check_accuracies, check_outcomes, merge_shards, MergeError, ShardDefect};

pub use checkpoint::{
    evaluate_checkpoint, prepare, EvalError, EvalRequest, PreparedEval, Shard, ShardError,
};

use crate::attacks::observe::Event;
use crate::attacks::util::{to_bools, to_f32s};
use crate::attacks::{self, Attack, Pgd, Preset};
use crate::data::{BatchIter, Dataset, LoaderConfig};
use crate::models::{Classifier, Model, ModelSpec};
use burn::module::Module;
use burn::prelude::*;
use std::sync::Arc;
use std::time::Instant;

/// How an evaluation runs.
#[derive(Debug, Clone)]
pub struct EvalConfig {
    /// L-inf radius on the [0,1] scale.
    pub eps: f64,
    pub batch_size: usize,
    pub seed: u64,
    /// Run the gradient-masking checks that attack again: an iterative attack that breaks
    /// nothing FGSM breaks, and PGD at ε = 0.5 on up to 100 examples.
    pub sanity_checks: bool,
}

/// Progress of one attack, for a progress bar.
#[derive(Debug, Clone)]
pub struct Progress<'a> {
    pub attack: &'a str,
    pub done: usize,
    pub total: usize,
    /// Robust so far among the examples done.
    pub robust: usize,
    /// Inside the batch being attacked: the component running now (long attacks only).
    pub stage: Option<Stage<'a>>,
}

/// Where a long attack (AutoAttack's components, APGD, FAB, Square) is inside one batch.
#[derive(Debug, Clone)]
pub struct Stage<'a> {
    pub component: &'a str,
    /// Units of the component's work done of total (iterations over all targets, queries).
    pub done: usize,
    pub total: usize,
    /// Points of the batch the component attacks, and how many are still robust.
    pub attacked: usize,
    pub robust: usize,
    /// Seconds since the component started on this batch.
    pub seconds: f64,
}

impl Stage<'_> {
    /// Seconds left in this component on this batch, extrapolated from its pace so far
    /// (`None` until there is a pace; an upper bound for the attacks that stop early).
    pub fn eta(&self) -> Option<f64> {
        (self.done > 0 && self.done <= self.total)
            .then(|| self.seconds * (self.total - self.done) as f64 / self.done as f64)
    }
}

/// Robustness after one stage of a composite attack.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct StageResult {
    pub name: String,
    pub robust_accuracy: f64,
    /// One character per example: '1' robust, '0' not.
    pub robust: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct AttackResult {
    pub name: String,
    pub black_box: bool,
    pub robust_accuracy: f64,
    /// One character per example: '1' robust, '0' not.
    pub robust: String,
    pub stages: Vec<StageResult>,
    pub settings: serde_json::Value,
    pub seconds: f64,
}

/// Everything `rslad eval` reports; also what `rslad report` reads.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct EvalResults {
    pub model: crate::models::ModelSpec,
    pub checkpoint: Option<String>,
    pub checkpoint_sha256: Option<String>,
    pub dataset: String,
    pub eps: f64,
    pub seed: u64,
    pub backend: String,
    /// Dataset indices of the evaluated examples, in order.
    pub example_ids: Vec<u64>,
    pub clean_accuracy: f64,
    pub clean: String,
    pub attacks: Vec<AttackResult>,
    pub warnings: Vec<String>,
    pub seconds: f64,
    /// Which piece of the test set a shard holds (absent for a whole evaluation, and in files
    /// written before shards recorded it): merging checks that no piece is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardRecord>,
    /// SHA-256 of the test examples the ids index (all of the request's, before sharding):
    /// parts and shards of other images never merge (absent in files written before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_sha256: Option<String>,
}

/// A shard's place: piece `index` of `count` of the first `test_examples` test images.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ShardRecord {
    pub index: usize,
    pub count: usize,
    pub test_examples: usize,
}

pub fn bits(v: &[bool]) -> String {
    v.iter().map(|&b| if b { '1' } else { '0' }).collect()
}

pub fn from_bits(s: &str) -> Vec<bool> {
    s.chars().map(|c| c == '1').collect()
}

fn share(v: &[bool]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().filter(|&&b| b).count() as f64 / v.len() as f64
    }
}

impl EvalResults {
    pub fn attack(&self, name: &str) -> Option<&AttackResult> {
        self.attacks.iter().find(|a| a.name == name)
    }
}

/// Runs `attack` on every batch of `data` (ids = `first_id` + position), only on the examples
/// in `eligible`; returns per-example robustness and per-stage robustness.
#[allow(clippy::too_many_arguments)]
pub fn run_attack(
    model: &dyn Classifier,
    attack: &dyn Attack,
    data: &Arc<Dataset>,
    ids: &[u64],
    eligible: &[bool],
    cfg: &EvalConfig,
    device: &Device,
    warnings: &mut Vec<String>,
    progress: &mut dyn FnMut(Progress),
) -> (Vec<bool>, Vec<(String, Vec<bool>)>) {
    let label = attack.label();
    let n = data.len();
    let mut robust = vec![false; n];
    let mut stages: Vec<(String, Vec<bool>)> = Vec::new();
    let mut outside = 0usize;
    let mut surrogate_non_finite = 0usize;
    let mut done = 0;
    for batch in BatchIter::new(data.clone(), LoaderConfig::sequential(cfg.batch_size)) {
        let active: Vec<usize> = (0..batch.len())
            .filter(|&j| eligible[batch.indices[j]])
            .collect();
        if !active.is_empty() {
            let (x, y) = batch.to_tensors(data.shape, device);
            let idx = attacks::util::index_tensor(&active, device);
            let (x, y) = (x.select(0, idx.clone()), y.select(0, idx));
            let sub_ids: Vec<u64> = active.iter().map(|&j| ids[batch.indices[j]]).collect();
            if let Some(surrogate) = attack.surrogate() {
                // A surrogate with NaN logits crafts no attack at all: its column would
                // silently equal clean accuracy.
                let z = to_f32s(surrogate.logits(x.clone()));
                let c = z.len() / active.len();
                surrogate_non_finite += z
                    .chunks(c.max(1))
                    .filter(|row| row.iter().any(|v| !v.is_finite()))
                    .count();
            }
            let robust_so_far = robust.iter().take(done).filter(|&&r| r).count();
            let mut started: Option<(String, usize, Instant)> = None;
            let outcome = attack.run_observed(model, x.clone(), y.clone(), &sub_ids, &mut |e| {
                let (component, work, total, still) = match e {
                    Event::Start {
                        component,
                        attacked,
                    } => {
                        started = Some((component.to_string(), *attacked, Instant::now()));
                        (*component, 0, 1, *attacked)
                    }
                    Event::Step {
                        component,
                        done,
                        total,
                        robust,
                    } => (*component, *done, *total, *robust),
                    Event::End { .. } => return,
                };
                // Attacks run on their own report no start: they attack the whole batch.
                if started.as_ref().is_none_or(|(c, _, _)| c != component) {
                    started = Some((component.to_string(), active.len(), Instant::now()));
                }
                let (_, attacked, t0) = started.as_ref().expect("set above");
                progress(Progress {
                    attack: &label,
                    done,
                    total: n,
                    robust: robust_so_far,
                    stage: Some(Stage {
                        component,
                        done: work,
                        total,
                        attacked: *attacked,
                        robust: still,
                        seconds: t0.elapsed().as_secs_f64(),
                    }),
                });
            });
            // Judge the point inside the threat model; count any that had to be moved.
            let ball = attacks::util::Ball::new(&x, cfg.eps);
            // A NaN pixel is no point of the threat model: the clean pixel stands for it (the
            // attack found nothing there), and the example counts as moved.
            let nan = outcome.adv.clone().is_nan();
            let nan_rows = to_f32s(
                nan.clone()
                    .float()
                    .reshape([active.len() as i32, -1])
                    .sum_dim(1),
            );
            let adv = outcome.adv.mask_where(nan, x.clone());
            let projected = ball.project(adv.clone());
            let moved = to_f32s(attacks::util::linf(projected.clone(), adv));
            outside += moved
                .iter()
                .zip(&nan_rows)
                .filter(|(&d, &n)| d > 1e-6 || n > 0.0)
                .count();
            let (ok, _) = judge(model, projected, y);
            for (slot, &j) in active.iter().enumerate() {
                robust[batch.indices[j]] = ok[slot];
            }
            for (s, (name, flags)) in outcome.stages.into_iter().enumerate() {
                if stages.len() <= s {
                    stages.push((name, vec![false; n]));
                }
                for (slot, &j) in active.iter().enumerate() {
                    stages[s].1[batch.indices[j]] = flags[slot];
                }
            }
        }
        done += batch.len();
        let robust_so_far = robust.iter().take(done).filter(|&&r| r).count();
        progress(Progress {
            attack: &label,
            done,
            total: n,
            robust: robust_so_far,
            stage: None,
        });
    }
    if outside > 0 {
        warnings.push(format!(
            "{label}: {outside} adversarial points were outside the eps-ball or [0,1] and were \
             projected before judging (an attack bug)"
        ));
    }
    if surrogate_non_finite > 0 {
        warnings.push(format!(
            "{label}: the surrogate produced NaN or infinite logits on {surrogate_non_finite} \
             clean inputs; its attack is meaningless (check the surrogate checkpoint)"
        ));
    }
    // A point broken by the whole attack is broken in its last stage too.
    if let Some((_, last)) = stages.last_mut() {
        for (l, r) in last.iter_mut().zip(&robust) {
            *l = *l && *r;
        }
    }
    (robust, stages)
}

/// Whether `model` classifies each image correctly, and whether any logit was NaN or
/// infinite. A row with a non-finite logit has no prediction: it is never counted correct
/// (argmax over NaN would pick a class arbitrarily and report chance as accuracy).
fn judge(model: &dyn Classifier, x: Tensor<4>, y: Tensor<1, Int>) -> (Vec<bool>, bool) {
    let z = model.logits(x);
    let [b, c] = z.dims();
    let zs = to_f32s(z.clone());
    let mut ok = to_bools(z.argmax(1).reshape([b]).equal(y));
    let mut non_finite = false;
    for (row, flag) in zs.chunks(c.max(1)).zip(ok.iter_mut()) {
        if row.iter().any(|v| !v.is_finite()) {
            *flag = false;
            non_finite = true;
        }
    }
    (ok, non_finite)
}

/// Clean accuracy of `model` on `data` and whether any logit was NaN or infinite.
pub fn clean_pass(
    model: &dyn Classifier,
    data: &Arc<Dataset>,
    batch_size: usize,
    device: &Device,
) -> (Vec<bool>, bool) {
    let mut correct_flags = vec![false; data.len()];
    let mut non_finite = false;
    for batch in BatchIter::new(data.clone(), LoaderConfig::sequential(batch_size)) {
        let (x, y) = batch.to_tensors(data.shape, device);
        let (ok, nan) = judge(model, x, y);
        non_finite |= nan;
        for (j, &i) in batch.indices.iter().enumerate() {
            correct_flags[i] = ok[j];
        }
    }
    (correct_flags, non_finite)
}

/// Evaluates `model` (put in eval mode here) on `data` under `attacks`. `first_id` is the
/// dataset index of `data`'s first example (for sharded runs).
pub fn evaluate(
    model: &Model,
    data: Dataset,
    first_id: u64,
    attacks: &[Box<dyn Attack>],
    cfg: &EvalConfig,
    device: &Device,
    progress: &mut dyn FnMut(Progress),
) -> EvalResults {
    let valid = model.valid();
    evaluate_classifier(
        &valid,
        &valid.spec,
        data,
        first_id,
        attacks,
        cfg,
        device,
        progress,
    )
}

/// [`evaluate`] for any classifier; the caller puts it in eval mode.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_classifier(
    model: &dyn Classifier,
    spec: &ModelSpec,
    data: Dataset,
    first_id: u64,
    attacks: &[Box<dyn Attack>],
    cfg: &EvalConfig,
    device: &Device,
    progress: &mut dyn FnMut(Progress),
) -> EvalResults {
    let start = Instant::now();
    let data = Arc::new(data);
    let ids: Vec<u64> = (0..data.len() as u64).map(|i| first_id + i).collect();
    let mut warnings = Vec::new();
    let (clean, non_finite) = clean_pass(model, &data, cfg.batch_size, device);
    if non_finite {
        warnings.push("the model produced NaN or infinite logits on clean inputs".into());
    }
    let mut results = Vec::new();
    for attack in attacks {
        let t0 = Instant::now();
        let (robust, stages) = run_attack(
            model,
            attack.as_ref(),
            &data,
            &ids,
            &clean,
            cfg,
            device,
            &mut warnings,
            progress,
        );
        results.push(AttackResult {
            name: attack.label(),
            black_box: attack.is_black_box(),
            robust_accuracy: share(&robust),
            robust: bits(&robust),
            stages: stages
                .iter()
                .map(|(name, flags)| StageResult {
                    name: name.clone(),
                    robust_accuracy: share(flags),
                    robust: bits(flags),
                })
                .collect(),
            settings: attack.settings(),
            seconds: t0.elapsed().as_secs_f64(),
        });
    }
    let mut out = EvalResults {
        model: spec.clone(),
        checkpoint: None,
        checkpoint_sha256: None,
        dataset: data.kind.name().to_string(),
        eps: cfg.eps,
        seed: cfg.seed,
        backend: crate::backend::describe(),
        example_ids: ids,
        clean_accuracy: share(&clean),
        clean: bits(&clean),
        attacks: results,
        warnings,
        seconds: 0.0,
        shard: None,
        data_sha256: None,
    };
    out.warnings.extend(consistency_warnings(&out));
    if cfg.sanity_checks && !data.is_empty() {
        let idle = idle_attack_check(model, &data, &out, cfg, device);
        out.warnings.extend(idle);
        if let Some(w) = large_eps_check(model, spec, &data, &out, cfg, device) {
            out.warnings.push(w);
        }
    }
    out.seconds = start.elapsed().as_secs_f64();
    out
}

/// Signs of gradient masking visible in the table itself.
pub fn consistency_warnings(r: &EvalResults) -> Vec<String> {
    let mut w = Vec::new();
    let fgsm = r.attack("FGSM").map(|a| a.robust_accuracy);
    let white: Vec<&AttackResult> = r.attacks.iter().filter(|a| !a.black_box).collect();
    for a in &white {
        if a.name != "FGSM" {
            if let Some(f) = fgsm {
                if a.robust_accuracy > f + 1e-9 {
                    w.push(format!(
                        "{} ({:.2}%) is weaker than single-step FGSM ({:.2}%): iterative attacks \
                         should be stronger; a sign of gradient masking",
                        a.name,
                        100.0 * a.robust_accuracy,
                        100.0 * f
                    ));
                }
            }
        }
    }
    if let Some(best_white) = white.iter().map(|a| a.robust_accuracy).reduce(f64::min) {
        for b in r.attacks.iter().filter(|a| a.black_box) {
            if b.robust_accuracy + 1e-9 < best_white {
                w.push(format!(
                    "black-box {} ({:.2}%) is stronger than every white-box attack ({:.2}%): a \
                     sign of gradient masking",
                    b.name,
                    100.0 * b.robust_accuracy,
                    100.0 * best_white
                ));
            }
        }
    }
    if let Some(aa) = r.attack("AA") {
        for s in &aa.stages {
            if s.robust_accuracy + 1e-9 < aa.robust_accuracy {
                w.push(format!(
                    "AA ({}) exceeds its stage {} ({})",
                    aa.robust_accuracy, s.name, s.robust_accuracy
                ));
            }
        }
    }
    w
}

/// An iterative white-box attack that breaks none of the correctly classified examples, on a
/// model single-step FGSM does break, did not run as an attack (a step or schedule that goes
/// nowhere): its column is clean accuracy under an attack's name. FGSM is taken from the
/// results when it was run, else run here.
fn idle_attack_check(
    model: &dyn Classifier,
    data: &Arc<Dataset>,
    r: &EvalResults,
    cfg: &EvalConfig,
    device: &Device,
) -> Vec<String> {
    let idle: Vec<&AttackResult> = r
        .attacks
        .iter()
        .filter(|a| !a.black_box && a.name != "FGSM")
        .filter(|a| r.clean_accuracy > 0.0 && a.robust == r.clean)
        .collect();
    if idle.is_empty() {
        return Vec::new();
    }
    let clean = from_bits(&r.clean);
    let fgsm_robust = match r.attack("FGSM") {
        Some(f) => from_bits(&f.robust),
        None => {
            let fgsm = Pgd::preset(Preset::Fgsm, cfg.eps, cfg.seed);
            let mut sink = Vec::new();
            run_attack(
                model,
                &fgsm,
                data,
                &r.example_ids,
                &clean,
                cfg,
                device,
                &mut sink,
                &mut |_| {},
            )
            .0
        }
    };
    let correct = clean.iter().filter(|&&c| c).count();
    let broken_by_fgsm = correct - fgsm_robust.iter().filter(|&&b| b).count();
    if broken_by_fgsm == 0 {
        return Vec::new();
    }
    idle.iter()
        .map(|a| {
            format!(
                "{} breaks none of the {correct} correctly classified examples, while FGSM \
                 breaks {broken_by_fgsm}: the attack did not run as one (check its step, steps \
                 and eps); its column is clean accuracy, not robustness",
                a.name
            )
        })
        .collect()
}

/// PGD-20 at ε = 0.5 must bring accuracy down to chance or below.
fn large_eps_check(
    model: &dyn Classifier,
    spec: &ModelSpec,
    data: &Arc<Dataset>,
    r: &EvalResults,
    cfg: &EvalConfig,
    device: &Device,
) -> Option<String> {
    let n = data.len().min(100);
    let slice = Arc::new(data.slice(0, n));
    let big = 0.5;
    let attack = Pgd::preset(Preset::Sat, big, cfg.seed);
    let big_cfg = EvalConfig {
        eps: big,
        ..cfg.clone()
    };
    let clean = from_bits(&r.clean)[..n].to_vec();
    let mut sink = Vec::new();
    let (robust, _) = run_attack(
        model,
        &attack,
        &slice,
        &r.example_ids[..n],
        &clean,
        &big_cfg,
        device,
        &mut sink,
        &mut |_| {},
    );
    let acc = share(&robust);
    let chance = 1.0 / spec.num_classes as f64;
    (acc > chance).then(|| {
        format!(
            "robust accuracy is still {:.1}% under PGD-20 at eps = 0.5 (on {n} examples); it should \
             fall to chance ({:.0}%) or below: a sign of gradient masking",
            100.0 * acc,
            100.0 * chance
        )
    })
}
