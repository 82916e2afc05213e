//! Attacks on models where the right answer is known.

mod common;

use burn::prelude::*;
use common::*;
use rslad::attacks::util::{correct, to_bools};
use rslad::attacks::{parse_list, AttackContext};
use rslad::models::{Classifier, ModelSpec};
use std::sync::Mutex;

const D: usize = 16; // 1×4×4 images

fn linear_two_class(seed: u64) -> (LinearModel, Vec<f32>) {
    let mut rng = Lcg(seed);
    let w: Vec<f32> = (0..D * 2).map(|_| rng.next_f32() - 0.5).collect();
    let b = vec![0.0, 0.05];
    let model = LinearModel {
        w: Tensor::from_data(TensorData::new(w.clone(), [D, 2]), &device()),
        b: Tensor::from_data(TensorData::new(b, [2]), &device()),
    };
    (model, w)
}

fn images(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Lcg(seed);
    (0..n * D).map(|_| rng.next_f32()).collect()
}

/// The optimal L-inf attack on a two-class linear model: every pixel to the end of its range
/// (the ball ∩ [0,1]) that lowers the margin (w_y − w_o)·x.
fn optimal(x: &[f32], w: &[f32], y: usize, eps: f32) -> Vec<f32> {
    (0..D)
        .map(|i| {
            let v = w[i * 2 + y] - w[i * 2 + (1 - y)];
            if v > 0.0 {
                (x[i] - eps).max(0.0)
            } else if v < 0.0 {
                (x[i] + eps).min(1.0)
            } else {
                x[i]
            }
        })
        .collect()
}

/// A spec whose class count matches the linear model under attack.
fn spec_with(classes: usize) -> ModelSpec {
    ModelSpec::new(
        "cnn-small".parse().unwrap(),
        rslad::data::DatasetKind::FashionMnist.shape(),
        classes,
    )
}

fn ctx_spec() -> ModelSpec {
    spec_with(2)
}

#[test]
fn fgsm_and_pgd_reach_the_closed_form_optimum() {
    let (model, w) = linear_two_class(1);
    let n = 64;
    let x = images(n, 2);
    let eps = 0.1f32;
    // Labels = the clean prediction, so every point starts correct.
    let xt = tensor4(x.clone(), [n, 1, 4, 4]);
    let pred: Vec<i64> = model
        .logits(xt.clone())
        .argmax(1)
        .reshape([n])
        .into_data()
        .try_into_vec_as()
        .unwrap();
    let y = labels(&pred);
    let spec = ctx_spec();
    let ctx = AttackContext {
        eps: eps as f64,
        seed: 3,
        device: &device(),
        target: &spec,
    };
    let mut analytic_robust = 0;
    let mut best = Vec::new();
    for i in 0..n {
        let opt = optimal(&x[i * D..(i + 1) * D], &w, pred[i] as usize, eps);
        let m: f32 = (0..D)
            .map(|k| (w[k * 2 + pred[i] as usize] - w[k * 2 + 1 - pred[i] as usize]) * opt[k])
            .sum::<f32>()
            + if pred[i] == 0 { -0.05 } else { 0.05 };
        if m > 0.0 {
            analytic_robust += 1;
        }
        best.extend(opt);
    }
    assert!(
        analytic_robust > 5 && analytic_robust < n - 5,
        "a discriminating case: {analytic_robust}/{n}"
    );
    for name in ["fgsm", "pgd-sat", "pgd-trades:step=0.02", "cw"] {
        let attack = parse_list(name, &ctx).unwrap().remove(0);
        let ids: Vec<u64> = (0..n as u64).collect();
        let adv = attack.run(&model, xt.clone(), y.clone(), &ids).adv;
        let got = floats(adv.clone());
        let worst = max_abs_diff(&got, &best);
        assert!(worst < 1e-5, "{name}: max distance to the optimum {worst}");
        let robust = to_bools(correct(&model, adv, y.clone()))
            .iter()
            .filter(|&&r| r)
            .count();
        assert_eq!(
            robust, analytic_robust,
            "{name}: robust accuracy equals the analytic one"
        );
    }
}

/// Records every input the model sees.
struct Spy<'a> {
    inner: &'a LinearModel,
    seen: Mutex<Vec<Vec<f32>>>,
}

impl Classifier for Spy<'_> {
    fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        self.seen
            .lock()
            .unwrap()
            .push(floats(x.clone().detach().without_autodiff()));
        self.inner.logits(x)
    }
}

/// Every iterate lies in the ball around the clean x and in [0,1], the first one included;
/// with a step larger than ε the iterate would drift if projection were around the previous one.
/// PGD_TRADES's start alone may leave [0,1]: the TRADES script does not clip it before its
/// first step (docs/spec/attacks.md).
#[test]
fn every_iterate_is_projected_around_the_clean_point_and_clipped() {
    let mut rng = Lcg(5);
    let w: Vec<f32> = (0..D * 4).map(|_| rng.next_f32() - 0.5).collect();
    let model = LinearModel {
        w: Tensor::from_data(TensorData::new(w, [D, 4]), &device()),
        b: Tensor::from_data(TensorData::new(vec![0.5, 0.0, 0.0, 0.0], [4]), &device()),
    };
    let n = 8;
    // Pixels at the borders of [0,1], where clipping matters.
    let x: Vec<f32> = images(n, 6)
        .iter()
        .map(|v| {
            if *v < 0.3 {
                0.0
            } else if *v > 0.7 {
                1.0
            } else {
                *v
            }
        })
        .collect();
    let xt = tensor4(x.clone(), [n, 1, 4, 4]);
    let y = labels(&vec![0; n]);
    let spec = spec_with(4);
    let eps = 0.05;
    let ctx = AttackContext {
        eps,
        seed: 1,
        device: &device(),
        target: &spec,
    };
    for name in [
        "fgsm",
        "pgd:steps=15:step=0.2",
        "pgd-trades:steps=15:step=0.2",
        "cw:step=0.2",
        "apgd-ce:steps=12",
        "apgd-t:steps=12:targets=1",
    ] {
        let spy = Spy {
            inner: &model,
            seen: Mutex::new(Vec::new()),
        };
        let attack = parse_list(name, &ctx).unwrap().remove(0);
        let ids: Vec<u64> = (0..n as u64).collect();
        let adv = floats(attack.run(&spy, xt.clone(), y.clone(), &ids).adv);
        let seen = spy.seen.into_inner().unwrap();
        assert!(seen.len() > 1, "{name}");
        for (k, batch) in seen.iter().chain(std::iter::once(&adv)).enumerate() {
            // Rows of a sub-batch are a subset of the examples; check against every example.
            for row in batch.chunks(D) {
                let near = x.chunks(D).any(|c| {
                    c.iter()
                        .zip(row)
                        .all(|(a, b)| (a - b).abs() <= eps as f32 + 1e-6)
                });
                assert!(
                    near,
                    "{name}: iterate {k} left the eps-ball around every clean point"
                );
                let unclipped_start = k == 0 && name.starts_with("pgd-trades");
                assert!(
                    unclipped_start || row.iter().all(|v| (0.0..=1.0).contains(v)),
                    "{name}: iterate {k} left [0,1]"
                );
            }
        }
    }
}

/// PGD_TRADES starts where the current TRADES script does: x + U(−ε, ε), not clipped before
/// the first gradient (pixels at 0 or 1 step outside [0,1]); `start=none` starts at x; the
/// results file records which (docs/spec/attacks.md, PGD_TRADES).
#[test]
fn pgd_trades_starts_uniform_unclipped_or_at_x_on_request() {
    let (model, _) = linear_two_class(3);
    let n = 8;
    let x: Vec<f32> = images(n, 4)
        .iter()
        .map(|v| if *v < 0.5 { 0.0 } else { 1.0 })
        .collect();
    let xt = tensor4(x.clone(), [n, 1, 4, 4]);
    let y = labels(&vec![0; n]);
    let spec = ctx_spec();
    let eps = 0.1;
    let ctx = AttackContext {
        eps,
        seed: 9,
        device: &device(),
        target: &spec,
    };
    let ids: Vec<u64> = (0..n as u64).collect();
    let first_input = |name: &str| {
        let attack = parse_list(name, &ctx).unwrap().remove(0);
        let spy = Spy {
            inner: &model,
            seen: Mutex::new(Vec::new()),
        };
        attack.run(&spy, xt.clone(), y.clone(), &ids);
        let settings = attack.settings();
        (spy.seen.into_inner().unwrap().remove(0), settings)
    };
    let (start, settings) = first_input("pgd-trades");
    assert_eq!(settings["start"]["kind"], "uniform", "{settings}");
    assert_eq!(settings["clip_start"], false, "{settings}");
    let offsets: Vec<f32> = start.iter().zip(&x).map(|(a, b)| a - b).collect();
    assert!(offsets.iter().all(|d| d.abs() <= eps as f32 + 1e-6));
    // Uniform over the whole ball: both signs and large offsets occur.
    assert!(offsets.iter().any(|d| *d > 0.05) && offsets.iter().any(|d| *d < -0.05));
    let outside = start.iter().filter(|v| !(0.0..=1.0).contains(*v)).count();
    assert!(
        outside > start.len() / 4,
        "the start is not clipped: {outside} of {} pixels outside [0,1]",
        start.len()
    );
    let (start, settings) = first_input("pgd-trades:start=none");
    assert_eq!(settings["start"]["kind"], "none", "{settings}");
    assert_eq!(start, x);
    // PGD_SAT's start is clipped.
    let (start, settings) = first_input("pgd-sat");
    assert_eq!(settings["clip_start"], true, "{settings}");
    assert!(start.iter().all(|v| (0.0..=1.0).contains(v)));
}

#[test]
fn same_seed_same_result_other_seed_other_start() {
    let (model, _) = linear_two_class(7);
    let n = 16;
    let xt = tensor4(images(n, 8), [n, 1, 4, 4]);
    let y = labels(&vec![1; n]);
    let spec = ctx_spec();
    let ids: Vec<u64> = (0..n as u64).collect();
    let run = |seed: u64, name: &str| {
        let ctx = AttackContext {
            eps: 0.03,
            seed,
            device: &device(),
            target: &spec,
        };
        floats(
            parse_list(name, &ctx)
                .unwrap()
                .remove(0)
                .run(&model, xt.clone(), y.clone(), &ids)
                .adv,
        )
    };
    for name in [
        "pgd:steps=1:step=0.001",
        "square:queries=30",
        "apgd-ce:steps=5",
    ] {
        assert_eq!(run(1, name), run(1, name), "{name} is reproducible");
    }
    assert_ne!(
        run(1, "pgd:steps=1:step=0.001"),
        run(2, "pgd:steps=1:step=0.001"),
        "the seed moves the start"
    );
}

/// A result per example does not depend on the other examples of the batch.
#[test]
fn attack_results_do_not_depend_on_the_batch() {
    let (model, _) = linear_two_class(9);
    let n = 12;
    let x = images(n, 10);
    let y: Vec<i64> = (0..n as i64).map(|i| i % 2).collect();
    let spec = ctx_spec();
    let ctx = AttackContext {
        eps: 0.05,
        seed: 4,
        device: &device(),
        target: &spec,
    };
    for name in ["pgd-sat", "square:queries=40", "apgd-ce:steps=10"] {
        let attack = parse_list(name, &ctx).unwrap().remove(0);
        let ids: Vec<u64> = (0..n as u64).collect();
        let whole = floats(
            attack
                .run(&model, tensor4(x.clone(), [n, 1, 4, 4]), labels(&y), &ids)
                .adv,
        );
        let mut parts = Vec::new();
        for (a, b) in [(0, 5), (5, 12)] {
            let xs = x[a * D..b * D].to_vec();
            parts.extend(floats(
                attack
                    .run(
                        &model,
                        tensor4(xs, [b - a, 1, 4, 4]),
                        labels(&y[a..b]),
                        &ids[a..b],
                    )
                    .adv,
            ));
        }
        let worst = max_abs_diff(&whole, &parts);
        assert!(worst < 1e-6, "{name}: {worst}");
    }
}

/// Targeted APGD moves towards its target, in the order of the clean logits. On a 4-class
/// linear model (true class 0), class 1 rises along +v and class 2 along −v.
#[test]
fn targeted_apgd_goes_to_its_target() {
    let mut rng = Lcg(11);
    let v: Vec<f32> = (0..D).map(|_| rng.next_f32() - 0.5).collect();
    let neg: f32 = v.iter().filter(|&&a| a < 0.0).map(|a| -a).sum();
    let build = |w1: f32, b: [f32; 4]| {
        let mut w = vec![0f32; D * 4];
        for i in 0..D {
            w[i * 4 + 1] = w1 * v[i];
            w[i * 4 + 2] = -v[i];
        }
        LinearModel {
            w: Tensor::from_data(TensorData::new(w, [D, 4]), &device()),
            b: Tensor::from_data(TensorData::new(b.to_vec(), [4]), &device()),
        }
    };
    let n = 4;
    let xt = tensor4(vec![0.5; n * D], [n, 1, 4, 4]);
    let y = labels(&vec![0; n]);
    let spec = spec_with(4);
    // ε = 0.5 lets every pixel reach 0 or 1: max(−v·x') = Σ_{v<0}|v|.
    let ctx = AttackContext {
        eps: 0.5,
        seed: 2,
        device: &device(),
        target: &spec,
    };
    let attack = parse_list("apgd-t:targets=2:steps=30", &ctx)
        .unwrap()
        .remove(0);
    let classes = |m: &LinearModel| -> Vec<i64> {
        let adv = attack.run(m, xt.clone(), y.clone(), &[0, 1, 2, 3]).adv;
        m.logits(adv)
            .argmax(1)
            .reshape([n])
            .into_data()
            .try_into_vec_as()
            .unwrap()
    };
    // Class 1 (second-highest clean logit) is reachable: the first target run takes it.
    assert_eq!(classes(&build(1.0, [1.0, 0.5, -2.0, -50.0])), vec![1; n]);
    // Class 1 is a constant 0.9 < z_0 = 1, out of reach; class 2 can reach z_2 = 1.2 − Σ|v_neg| + Σ|v_neg|.
    assert_eq!(
        classes(&build(0.0, [1.0, 0.9, 1.2 - neg, -50.0])),
        vec![2; n]
    );
}

/// APGD-T and FAB-T stack every target class into one batch and drop an example's rows once
/// one of them succeeds; the examples they break are exactly those broken one target at a
/// time (the reference's order), on a 6-class linear model with a mix of outcomes.
#[test]
fn stacked_targets_break_the_same_examples_as_one_target_at_a_time() {
    use rslad::attacks::{apgd, fab, Attack};
    let classes = 6;
    let mut rng = Lcg(21);
    let w: Vec<f32> = (0..D * classes).map(|_| rng.next_f32() - 0.5).collect();
    let model = LinearModel {
        w: Tensor::from_data(TensorData::new(w, [D, classes]), &device()),
        b: Tensor::from_data(TensorData::new(vec![0f32; classes], [classes]), &device()),
    };
    let n = 48;
    let xt = tensor4(images(n, 22), [n, 1, 4, 4]);
    // Labels: the clean predictions, so every example is attacked.
    let y = model.logits(xt.clone()).argmax(1).reshape([n]);
    let ids: Vec<u64> = (0..n as u64).collect();
    let eps = 0.04;
    let broken = |attack: &dyn Attack| -> Vec<bool> {
        let adv = attack.run(&model, xt.clone(), y.clone(), &ids).adv;
        to_bools(correct(&model, adv, y.clone()))
            .iter()
            .map(|c| !c)
            .collect()
    };
    let mut a = apgd::Apgd::new("APGD-T", eps, apgd::ApgdLoss::DlrTargeted, 3);
    a.iterations = 20;
    a.target_classes = 5;
    let stacked = broken(&a);
    a.stack_rows = 1;
    let one_by_one = broken(&a);
    assert_eq!(stacked, one_by_one, "APGD-T");
    let count = stacked.iter().filter(|b| **b).count();
    assert!(
        count > 0 && count < n,
        "APGD-T breaks {count} of {n}: no mix"
    );

    let mut f = fab::Fab::new("FAB-T", eps, 3);
    f.iterations = 20;
    f.target_classes = 5;
    let stacked = broken(&f);
    f.stack_rows = 1;
    let one_by_one = broken(&f);
    assert_eq!(stacked, one_by_one, "FAB-T");
    let count = stacked.iter().filter(|b| **b).count();
    assert!(
        count > 0 && count < n,
        "FAB-T breaks {count} of {n}: no mix"
    );
}
