//! The attack suite against a cnn-small trained (naturally) on real Fashion-MNIST.

mod common;

use burn::module::Module;
use burn::prelude::*;
use common::*;
use rslad::attacks::util::{correct, to_bools};
use rslad::attacks::{parse_list, AttackContext};
use rslad::data::{self, Dataset, DatasetKind, Split};
use rslad::eval::{
    self, consistency_warnings, evaluate, evaluate_classifier, from_bits, EvalConfig, EvalResults,
};
use rslad::models::{load_model, Classifier, Model};
use rslad::train::{self, TrainOverrides};
use std::sync::OnceLock;

const N: usize = 100;

fn trained() -> &'static (Model, Dataset) {
    static MODEL: OnceLock<(Model, Dataset)> = OnceLock::new();
    MODEL.get_or_init(|| {
        let out = temp_dir("trained-cnn");
        let cfg = TrainOverrides {
            method: Some("natural".into()),
            dataset: Some("fashion-mnist".into()),
            data_dir: Some(fashion_dir()),
            model: Some("cnn-small".parse().unwrap()),
            epochs: Some(1),
            train_limit: Some(10_000),
            test_limit: Some(N),
            batch_size: Some(64),
            lr: Some(0.05),
            milestones: Some(vec![]),
            out: Some(out.clone()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        train::run(&cfg, &device(), &mut train::Silent).unwrap();
        let model = load_model(&out.join("last.safetensors"), &device(), None).unwrap();
        let test = data::load(
            DatasetKind::FashionMnist,
            Some(&fashion_dir()),
            Split::Test,
            Some(N),
        )
        .unwrap();
        (model, test)
    })
}

fn eval_with(list: &str, eps: f64, batch_size: usize) -> EvalResults {
    let (model, test) = trained();
    let ctx = AttackContext {
        eps,
        seed: 0,
        device: &device(),
        target: &model.spec,
    };
    let attacks = parse_list(list, &ctx).unwrap();
    let cfg = EvalConfig {
        eps,
        batch_size,
        seed: 0,
        sanity_checks: false,
    };
    evaluate(
        model,
        test.clone(),
        0,
        &attacks,
        &cfg,
        &device(),
        &mut |_| {},
    )
}

fn acc(r: &EvalResults, name: &str) -> f64 {
    r.attack(name).unwrap().robust_accuracy
}

#[test]
fn robust_accuracy_falls_with_eps_and_reaches_zero() {
    let mut prev = f64::INFINITY;
    let mut first = 0.0;
    for (k, eps) in [0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5]
        .into_iter()
        .enumerate()
    {
        let r = eval_with("pgd-sat", eps, 64);
        let a = acc(&r, "PGD_SAT");
        if k == 0 {
            first = a;
            assert!(
                (a - r.clean_accuracy).abs() < 1e-12,
                "eps 0 leaves the clean accuracy"
            );
            assert!(a > 0.7, "a trained model: clean {a}");
        }
        assert!(
            a <= prev,
            "robust accuracy rose from {prev} to {a} at eps {eps}"
        );
        prev = a;
    }
    assert!(prev <= 0.1, "PGD at eps 0.5 leaves {prev} (from {first})");
}

/// AutoAttack breaks a point if any component does: its robust set is exactly the intersection
/// of its components' robust sets (run alone), so it is at most each of them, and at most PGD.
#[test]
fn autoattack_is_the_per_example_worst_case_of_its_components() {
    let eps = 0.02;
    let r = eval_with("aa:steps=25:queries=300,apgd-ce:steps=25,apgd-t:steps=25,fab-t:steps=25,square:queries=300,pgd-sat", eps, 64);
    let aa = from_bits(&r.attack("AA").unwrap().robust);
    let mut worst = from_bits(&r.clean);
    for c in ["APGD-CE", "APGD-T", "FAB-T", "Square"] {
        let flags = from_bits(&r.attack(c).unwrap().robust);
        for (w, f) in worst.iter_mut().zip(flags) {
            *w = *w && f;
        }
        assert!(acc(&r, "AA") <= acc(&r, c), "AA above {c}");
    }
    assert_eq!(aa, worst, "AA = per-example worst case");
    assert!(acc(&r, "AA") <= acc(&r, "PGD_SAT"));
    assert!(
        acc(&r, "AA") < r.clean_accuracy,
        "eps {eps} breaks some points"
    );
    // Stages are cumulative and end at the final figure.
    let stages = &r.attack("AA").unwrap().stages;
    assert_eq!(stages.len(), 4);
    assert!(stages
        .windows(2)
        .all(|w| w[1].robust_accuracy <= w[0].robust_accuracy));
    assert_eq!(stages[3].robust_accuracy, acc(&r, "AA"));
    assert!(
        consistency_warnings(&r).is_empty(),
        "{:?}",
        consistency_warnings(&r)
    );
}

#[test]
fn apgd_with_100_iterations_is_at_least_as_strong_as_pgd_20() {
    for eps in [0.01, 0.02] {
        let r = eval_with("apgd-ce,pgd-sat", eps, 64);
        assert!(
            acc(&r, "APGD-CE") <= acc(&r, "PGD_SAT"),
            "eps {eps}: {} vs {}",
            acc(&r, "APGD-CE"),
            acc(&r, "PGD_SAT")
        );
    }
}

#[test]
fn square_without_gradients_lowers_accuracy() {
    let r = eval_with("square:queries=200", 0.05, 64);
    assert!(
        acc(&r, "Square") < r.clean_accuracy - 0.1,
        "{} vs clean {}",
        acc(&r, "Square"),
        r.clean_accuracy
    );
}

/// With BatchNorm in eval mode an example's result cannot depend on its batch.
#[test]
fn deterministic_attack_independent_of_batch_size() {
    let a = eval_with("pgd-trades,fgsm", 0.02, 7);
    let b = eval_with("pgd-trades,fgsm", 0.02, 100);
    assert_eq!(
        a.attack("PGD_TRADES").unwrap().robust,
        b.attack("PGD_TRADES").unwrap().robust
    );
    assert_eq!(
        a.attack("FGSM").unwrap().robust,
        b.attack("FGSM").unwrap().robust
    );
}

/// The reported figure is the accuracy of the model on the points the attack returned.
#[test]
fn reported_accuracy_equals_accuracy_on_returned_points() {
    let (model, test) = trained();
    let eps = 0.02;
    let r = eval_with("pgd-sat,cw", eps, 32);
    let valid = model.valid();
    let ctx = AttackContext {
        eps,
        seed: 0,
        device: &device(),
        target: &model.spec,
    };
    for attack in parse_list("pgd-sat,cw", &ctx).unwrap() {
        let batch = data::BatchIter::new(
            std::sync::Arc::new(test.clone()),
            data::LoaderConfig::sequential(N),
        )
        .next()
        .unwrap();
        let (x, y) = batch.to_tensors(test.shape, &device());
        let ids: Vec<u64> = (0..N as u64).collect();
        let adv = attack.run(&valid, x.clone(), y.clone(), &ids).adv;
        let clean = to_bools(correct(&valid, x, y.clone()));
        let still = to_bools(correct(&valid, adv, y));
        let recomputed =
            clean.iter().zip(&still).filter(|(c, s)| **c && **s).count() as f64 / N as f64;
        assert_eq!(recomputed, acc(&r, &attack.label()), "{}", attack.label());
    }
}

/// Logits through a staircase: zero gradients everywhere, so gradient attacks stall while a
/// score-based attack does not. The evaluation must say so.
struct Masked<'a>(&'a Model);

impl Classifier for Masked<'_> {
    fn logits(&self, x: Tensor<4>) -> Tensor<2> {
        let stepped = x.mul_scalar(8.0).floor().div_scalar(8.0);
        self.0.logits(stepped)
    }
}

#[test]
fn gradient_masking_is_flagged() {
    let (model, test) = trained();
    let valid = model.valid();
    let eps = 0.1;
    let ctx = AttackContext {
        eps,
        seed: 0,
        device: &device(),
        target: &model.spec,
    };
    let attacks = parse_list("fgsm,pgd-sat,square:queries=300", &ctx).unwrap();
    let cfg = EvalConfig {
        eps,
        batch_size: 50,
        seed: 0,
        sanity_checks: true,
    };
    let r = evaluate_classifier(
        &Masked(&valid),
        &valid.spec,
        test.clone(),
        0,
        &attacks,
        &cfg,
        &device(),
        &mut |_| {},
    );
    let all = r.warnings.join("\n");
    assert!(all.contains("black-box Square"), "{all}");
    assert!(all.contains("eps = 0.5"), "{all}");
    let _ = eval::bits(&[true]);
}
