//! The training methods: outer losses against values computed by hand, inner attacks that
//! raise their own objective, a teacher that never changes, RSLAD's independence from labels,
//! and BatchNorm modes around the inner attack.

mod common;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::store::ModuleSnapshot;
use common::*;
use rslad::data::DatasetKind;
use rslad::methods::kl::KlReduction;
use rslad::methods::{
    self, ard, iad, rslad as rslad_method, run_inner, trades, MethodConfig, StepInput,
};
use rslad::models::{Model, ModelSpec};
use rslad::train::sgd::Sgd;

const B: usize = 3;
const C: usize = 4;

fn t2(v: &[f64]) -> Tensor<2> {
    let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
    Tensor::from_data(TensorData::new(f, [v.len() / C, C]), &device().autodiff())
}

fn softmax(z: &[f64], tau: f64) -> Vec<f64> {
    let m = z.iter().cloned().fold(f64::MIN, f64::max);
    let e: Vec<f64> = z.iter().map(|v| ((v - m) / tau).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

fn kl(p: &[f64], q: &[f64]) -> f64 {
    p.iter()
        .zip(q)
        .map(|(a, b)| if *a > 0.0 { a * (a.ln() - b.ln()) } else { 0.0 })
        .sum()
}

fn ce(z: &[f64], y: usize) -> f64 {
    -softmax(z, 1.0)[y].ln()
}

fn rows(v: &[f64]) -> Vec<&[f64]> {
    v.chunks(C).collect()
}

fn value(t: Tensor<1>) -> f64 {
    t.into_scalar::<f32>() as f64
}

fn fixed() -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<i64>) {
    let teacher = vec![
        2.0, 0.5, -1.0, 0.0, -0.3, 1.2, 0.4, 0.9, 0.0, 0.0, 3.0, -2.0,
    ];
    let adv = vec![
        0.1, 0.2, 0.3, -0.4, 1.5, -1.0, 0.0, 0.5, -0.7, 0.8, 0.6, 0.1,
    ];
    let clean = vec![1.0, -0.5, 0.2, 0.0, 0.3, 2.0, -1.0, 0.2, 0.1, 0.0, 1.4, 0.3];
    (teacher, adv, clean, vec![0, 1, 2])
}

#[test]
fn outer_losses_by_hand() {
    let (t, a, c, y) = fixed();
    let yt = labels(&y).autodiff();
    let (tr, ar, cr) = (rows(&t), rows(&a), rows(&c));
    let close = |got: f64, want: f64, what: &str| {
        assert!(
            (got - want).abs() < 1e-5 * want.abs().max(1.0),
            "{what}: {got} vs {want}"
        )
    };

    // TRADES: CE(clean) + β · mean_i KL(softmax(clean_i) ‖ softmax(adv_i)).
    let beta = 6.0;
    let want = (0..B).map(|i| ce(cr[i], y[i] as usize)).sum::<f64>() / B as f64
        + beta
            * (0..B)
                .map(|i| kl(&softmax(cr[i], 1.0), &softmax(ar[i], 1.0)))
                .sum::<f64>()
            / B as f64;
    close(
        value(trades::outer_loss(t2(&c), t2(&a), &yt, beta)),
        want,
        "TRADES",
    );

    // ARD: α τ² KL(T/τ ‖ S(x')/τ), official = mean over B·C elements, + (1−α) CE(S(x)).
    for (alpha, tau, red) in [
        (1.0, 30.0, KlReduction::Official),
        (0.7, 2.0, KlReduction::Official),
        (1.0, 4.0, KlReduction::Batchmean),
    ] {
        let total: f64 = (0..B)
            .map(|i| kl(&softmax(tr[i], tau), &softmax(ar[i], tau)))
            .sum();
        let kl_red = match red {
            KlReduction::Official => total / (B * C) as f64,
            KlReduction::Batchmean => total / B as f64,
        };
        let ce_term = (0..B).map(|i| ce(cr[i], y[i] as usize)).sum::<f64>() / B as f64;
        let want = alpha * tau * tau * kl_red + (1.0 - alpha) * ce_term;
        close(
            value(ard::outer_loss(
                t2(&t),
                t2(&a),
                Some(t2(&c)),
                &yt,
                alpha,
                tau,
                red,
            )),
            want,
            "ARD",
        );
    }

    // IAD: α τ² mean_i KL_i(T/τ ‖ S(x')/τ) + α mean_i (1 − a_i) KL_i(S(x) ‖ S(x')) + (1−α) CE.
    let trust = [0.9, 0.2, 0.5];
    let trust_t = Tensor::<1>::from_data(
        TensorData::new(trust.iter().map(|&v| v as f32).collect::<Vec<_>>(), [B]),
        &device(),
    );
    for (alpha, tau, with_trust) in [(1.0, 1.0, true), (0.8, 2.0, true), (1.0, 1.0, false)] {
        let first: f64 = (0..B)
            .map(|i| kl(&softmax(tr[i], tau), &softmax(ar[i], tau)))
            .sum::<f64>()
            / B as f64;
        let second: f64 = (0..B)
            .map(|i| (1.0 - trust[i]) * kl(&softmax(cr[i], 1.0), &softmax(ar[i], 1.0)))
            .sum::<f64>()
            / B as f64;
        let ce_term = (0..B).map(|i| ce(cr[i], y[i] as usize)).sum::<f64>() / B as f64;
        let want = alpha * tau * tau * first
            + if with_trust { alpha * second } else { 0.0 }
            + (1.0 - alpha) * ce_term;
        let got = iad::outer_loss(
            t2(&t),
            t2(&a),
            Some(t2(&c)),
            with_trust.then(|| trust_t.clone()),
            &yt,
            alpha,
            tau,
        );
        close(value(got), want, "IAD");
    }

    // RSLAD official: mean over B·C of −log q·p + log(p + 1e−5)·p, weights 5/6 and 1/6.
    let official = |s: &[&[f64]]| -> f64 {
        let mut acc = 0.0;
        for i in 0..B {
            let p = softmax(tr[i], 1.0);
            let q = softmax(s[i], 1.0);
            for k in 0..C {
                acc += -q[k].ln() * p[k] + (p[k] + 1e-5).ln() * p[k];
            }
        }
        acc / (B * C) as f64
    };
    let want = 5.0 / 6.0 * official(&ar) + 1.0 / 6.0 * official(&cr);
    close(
        value(rslad_method::outer_loss(
            t2(&t),
            t2(&a),
            t2(&c),
            KlReduction::Official,
        )),
        want,
        "RSLAD official",
    );
    let bm = |s: &[&[f64]]| {
        (0..B)
            .map(|i| kl(&softmax(tr[i], 1.0), &softmax(s[i], 1.0)))
            .sum::<f64>()
            / B as f64
    };
    let want = 5.0 / 6.0 * bm(&ar) + 1.0 / 6.0 * bm(&cr);
    close(
        value(rslad_method::outer_loss(
            t2(&t),
            t2(&a),
            t2(&c),
            KlReduction::Batchmean,
        )),
        want,
        "RSLAD batchmean",
    );
}

fn setup(seed: u64) -> (Model, Model, Tensor<4>, Tensor<1, Int>) {
    let device = device();
    device.seed(seed);
    let spec = ModelSpec::for_dataset("cnn-small".parse().unwrap(), DatasetKind::FashionMnist);
    let student = spec.build(&device.clone().autodiff()).unwrap();
    let teacher = spec.build(&device).unwrap().valid();
    let n = 16;
    let data = temp_dir(&format!("methods-{seed}"));
    fake_fashion(&data, n, 1, false);
    let d = rslad::data::load(
        DatasetKind::FashionMnist,
        Some(&data),
        rslad::data::Split::Train,
        None,
    )
    .unwrap();
    let batch = rslad::data::BatchIter::new(
        std::sync::Arc::new(d),
        rslad::data::LoaderConfig::sequential(n),
    )
    .next()
    .unwrap();
    let (x, y) = batch.to_tensors(rslad::data::DatasetKind::FashionMnist.shape(), &device);
    (student, teacher, x, y)
}

fn snapshot(m: &Model) -> Vec<(String, Vec<f32>)> {
    m.valid()
        .collect(None, None, true)
        .into_iter()
        .map(|t| {
            let name = t.name.clone();
            let bytes = t.to_bytes().unwrap();
            let v = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (name, v)
        })
        .collect()
}

fn running_stats(m: &Model) -> Vec<f32> {
    snapshot(m)
        .into_iter()
        .filter(|(n, _)| n.contains("running"))
        .flat_map(|(_, v)| v)
        .collect()
}

/// Each method's inner attack raises its own objective (evaluated in the BatchNorm mode the
/// attack used), stays in the ball, and leaves the student in training mode.
#[test]
fn inner_attacks_raise_their_own_objective() {
    for name in ["sat", "trades", "ard", "iad", "rslad"] {
        let (student, teacher, x, y) = setup(1);
        let mut cfg = MethodConfig::defaults(name, DatasetKind::FashionMnist, 10);
        cfg.eps = 0.1;
        cfg.attack_step_size = 0.025;
        let method = methods::build(&cfg).unwrap();
        let ids: Vec<u64> = (0..16).collect();
        let input = StepInput {
            x: x.clone(),
            y: y.clone(),
            ids: &ids,
            epoch: 0,
            seed: 5,
            teacher_logits: Some(methods::teacher_logits(&teacher, x.clone())),
        };
        let stats_before = running_stats(&student);
        let inner = method.inner(&student, &input).unwrap();
        let x_adv = run_inner(&student, &cfg, &input, &inner);
        let stats_after = running_stats(&student);
        let probe: Model = match cfg.attack_bn {
            methods::AttackBn::Eval => {
                assert_eq!(
                    stats_before, stats_after,
                    "{name}: an eval-mode attack leaves running statistics alone"
                );
                student.valid()
            }
            methods::AttackBn::Train => {
                assert_ne!(
                    stats_before, stats_after,
                    "{name}: a train-mode attack updates running statistics, as the official code"
                );
                student.clone().no_grad()
            }
        };
        let objective = |z: Tensor<4>| {
            value(
                (inner.objective)(
                    rslad::models::Classifier::logits(&probe, z.autodiff())
                        .without_autodiff()
                        .detach(),
                )
                .sum(),
            )
        };
        let (before, after) = (objective(x.clone()), objective(x_adv.clone()));
        assert!(after > before, "{name}: objective {before} -> {after}");
        let dist = floats(rslad::attacks::util::linf(x_adv.clone(), x.clone()));
        assert!(dist.iter().all(|&d| d <= 0.1 + 1e-6), "{name}: within eps");
        assert!(
            floats(x_adv.clone())
                .iter()
                .all(|v| (0.0..=1.0).contains(v)),
            "{name}: within [0,1]"
        );
        // Still in training mode: a forward on batch statistics differs from the eval snapshot.
        let train_out = floats(methods::train_forward(&student, x.clone()).without_autodiff());
        let eval_out = floats(rslad::models::Classifier::logits(
            &student.valid(),
            x.clone(),
        ));
        assert!(
            train_out
                .iter()
                .zip(&eval_out)
                .any(|(a, b)| (a - b).abs() > 1e-4),
            "{name}: student back in training mode"
        );
    }
}

/// Distillation epochs leave every tensor of the teacher bit-identical.
#[test]
fn teacher_is_never_changed() {
    for name in ["ard", "iad", "rslad"] {
        let (mut student, teacher, x, y) = setup(2);
        let before = snapshot(&teacher);
        let mut cfg = MethodConfig::defaults(name, DatasetKind::FashionMnist, 10);
        cfg.iad_begin = 0;
        let method = methods::build(&cfg).unwrap();
        let mut sgd = Sgd::new(0.9, 2e-4);
        let ids: Vec<u64> = (0..16).collect();
        for step in 0..3 {
            let input = StepInput {
                x: x.clone(),
                y: y.clone(),
                ids: &ids,
                epoch: 1,
                seed: step,
                teacher_logits: Some(methods::teacher_logits(&teacher, x.clone())),
            };
            let out = methods::step(method.as_ref(), &student, Some(&teacher), &input);
            let grads = GradientsParams::from_grads(out.loss.backward(), &student);
            student = sgd.step(0.1, student, grads);
        }
        assert_eq!(before, snapshot(&teacher), "{name}");
        assert!(!sgd.velocity.keys().any(|k| k.contains("teacher")));
    }
}

/// RSLAD never looks at the hard labels: permuted labels give the same loss and gradients.
#[test]
fn rslad_ignores_labels() {
    let (_, teacher, x, y) = setup(3);
    let cfg = MethodConfig::defaults("rslad", DatasetKind::FashionMnist, 10);
    let method = methods::build(&cfg).unwrap();
    let ids: Vec<u64> = (0..16).collect();
    let ys: Vec<i64> = y.clone().into_data().try_into_vec_as().unwrap();
    let permuted: Vec<i64> = ys.iter().map(|v| (v + 3) % 10).collect();
    // A fresh, identical student each time: BatchNorm running statistics change with every
    // training-mode pass.
    let run = |labels_: Tensor<1, Int>| {
        let student = setup(3).0;
        let input = StepInput {
            x: x.clone(),
            y: labels_,
            ids: &ids,
            epoch: 0,
            seed: 9,
            teacher_logits: Some(methods::teacher_logits(&teacher, x.clone())),
        };
        let out = methods::step(method.as_ref(), &student, Some(&teacher), &input);
        let loss = value(out.loss.clone());
        let grads = GradientsParams::from_grads(out.loss.backward(), &student);
        let mut sgd = Sgd::new(0.0, 0.0);
        let updated = sgd.step(1.0, student.clone(), grads);
        (loss, snapshot(&updated))
    };
    let (l1, w1) = run(y.clone());
    let (l2, w2) = run(labels(&permuted));
    assert_ne!(ys, permuted);
    assert_eq!(l1, l2);
    assert_eq!(w1, w2);
}

/// Independent copies of `model` (weights and running statistics), through a checkpoint file:
/// clones share BatchNorm's running state, and rebuilding from the device seed races with
/// other tests seeding the same device.
fn fresh_copies(model: &Model, tag: &str) -> impl Fn() -> Model {
    let path = temp_dir(&format!("copies-{tag}")).join("model.safetensors");
    rslad::models::save_model(model, &path, &[]).unwrap();
    move || rslad::models::load_model(&path, &device().autodiff(), None).unwrap()
}

/// With `bn_passes = official` one step leaves the student's BatchNorm running statistics
/// exactly where the official code's sequence of training-mode forwards leaves them (the same
/// forwards done here by hand after the same inner attack): TRADES x, x', x; ARD x', x (even at
/// α = 1); IAD x', x, and x again from `iad_begin` on. `minimal` differs from that sequence.
#[test]
fn bn_passes_official_leave_the_official_running_statistics() {
    for (name, epoch) in [("trades", 0), ("ard", 0), ("iad", 0), ("iad", 5)] {
        let seed = 21;
        let (student, teacher, x, y) = setup(seed);
        let fresh = fresh_copies(&student, &format!("bn-{name}-{epoch}"));
        let ids: Vec<u64> = (0..16).collect();
        let input = StepInput {
            x: x.clone(),
            y: y.clone(),
            ids: &ids,
            epoch,
            seed: 4,
            teacher_logits: Some(methods::teacher_logits(&teacher, x.clone())),
        };
        let mut cfg = MethodConfig::defaults(name, DatasetKind::FashionMnist, 10);
        cfg.iad_begin = 3;
        assert_eq!(cfg.bn_passes, methods::BnPasses::Official, "the default");
        assert_eq!(cfg.alpha, 1.0);
        let after_step = |passes| {
            let student = fresh();
            let mut cfg = cfg.clone();
            cfg.bn_passes = passes;
            let method = methods::build(&cfg).unwrap();
            let out = methods::step(method.as_ref(), &student, Some(&teacher), &input);
            // The step's graph is complete: backward runs.
            let _ = out.loss.backward();
            running_stats(&student)
        };
        // By hand: the inner attack (it updates the statistics itself where the official
        // code attacks in training mode), then the official outer forwards in order.
        let hand = {
            let student = fresh();
            let method = methods::build(&cfg).unwrap();
            let inner = method.inner(&student, &input).unwrap();
            let x_adv = run_inner(&student, &cfg, &input, &inner);
            let order: Vec<&Tensor<4>> = match (name, epoch >= cfg.iad_begin) {
                ("trades", _) => vec![&x, &x_adv, &x],
                ("ard", _) | ("iad", false) => vec![&x_adv, &x],
                _ => vec![&x_adv, &x, &x],
            };
            for batch in order {
                let _ = methods::train_forward(&student, batch.clone());
            }
            running_stats(&student)
        };
        let official = after_step(methods::BnPasses::Official);
        let diff = max_abs_diff(&official, &hand);
        assert!(diff < 1e-6, "{name} epoch {epoch}: {diff}");
        let minimal = after_step(methods::BnPasses::Minimal);
        assert!(
            max_abs_diff(&minimal, &hand) > 1e-4,
            "{name} epoch {epoch}: minimal skips a pass, so its statistics differ"
        );
    }
}

/// RSLAD on CIFAR-100: the official scripts multiply both element-mean KL terms by 10, so the
/// loss and every gradient are 10x those of the CIFAR-10 form on the same batch; the batch-mean
/// form keeps no factor (docs/spec/methods.md, RSLAD).
#[test]
fn rslad_cifar100_scales_the_official_kl_by_ten() {
    use rslad::train::TrainOverrides;
    let resolve = |dataset: &str, reduction: Option<&str>| {
        TrainOverrides {
            method: Some("rslad".into()),
            dataset: Some(dataset.into()),
            teacher: Some("t.safetensors".into()),
            kl_reduction: reduction.map(|r| r.parse().unwrap()),
            out: Some("/tmp/unused".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap()
        .method
    };
    let c100 = resolve("cifar100", None);
    assert_eq!(c100.kl_scale, 10.0);
    assert_eq!(resolve("cifar10", None).kl_scale, 1.0);
    assert_eq!(resolve("cifar100", Some("batchmean")).kl_scale, 1.0);
    assert!(TrainOverrides::from_toml_str(
        "dataset = 'cifar10'\nbn_passes = 'some'\nout = '/tmp/unused'"
    )
    .and_then(TrainOverrides::resolve)
    .unwrap_err()
    .to_string()
    .contains("official or minimal"));

    // One step on a CIFAR-100-shaped batch, with and without the factor.
    let device = device();
    let spec = ModelSpec::for_dataset("cnn-small".parse().unwrap(), DatasetKind::Cifar100);
    let b = 8;
    let mut rng = Lcg(5);
    let x = tensor4(
        (0..b * spec.input.len()).map(|_| rng.next_f32()).collect(),
        [b, 3, 32, 32],
    );
    let t: Vec<f32> = (0..b * 100).map(|_| 4.0 * rng.next_f32() - 2.0).collect();
    let teacher_logits = Tensor::<2>::from_data(TensorData::new(t, [b, 100]), &device);
    let ids: Vec<u64> = (0..b as u64).collect();
    let input = StepInput {
        x,
        y: labels(&vec![0; b]),
        ids: &ids,
        epoch: 0,
        seed: 1,
        teacher_logits: Some(teacher_logits),
    };
    let fresh = fresh_copies(&spec.build(&device.clone().autodiff()).unwrap(), "c100");
    let run = |scale: f64| {
        let student = fresh();
        let mut cfg = c100.clone();
        cfg.kl_scale = scale;
        let method = methods::build(&cfg).unwrap();
        let out = methods::step(method.as_ref(), &student, None, &input);
        let loss = value(out.loss.clone());
        let grads = GradientsParams::from_grads(out.loss.backward(), &student);
        let updated = Sgd::new(0.0, 0.0).step(1000.0, student.clone(), grads);
        let (before, after) = (snapshot(&student), snapshot(&updated));
        // Every weight's gradient (×1000), as the change of one plain SGD step of lr 1000.
        let g: Vec<f32> = before
            .iter()
            .zip(&after)
            .filter(|(p, _)| !p.0.contains("running"))
            .flat_map(|(p, q)| p.1.iter().zip(&q.1).map(|(a, b)| a - b).collect::<Vec<_>>())
            .collect();
        (loss, g)
    };
    let (loss1, g1) = run(1.0);
    let (loss10, g10) = run(10.0);
    let norm = |g: &[f32]| g.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
    eprintln!(
        "RSLAD on a CIFAR-100-shaped batch: loss {loss1:.6} -> {loss10:.6}, \
         gradient norm {:.6e} -> {:.6e}",
        norm(&g1),
        norm(&g10)
    );
    assert!((loss10 / loss1 - 10.0).abs() < 1e-4, "{loss1} {loss10}");
    assert!((norm(&g10) / norm(&g1) - 10.0).abs() < 1e-3);
}
