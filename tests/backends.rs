//! flex and libtorch agree: the same training step (same weights, same batch) gives the same
//! loss and updated weights within 1e-4, and the same attack the same robust accuracy.
//! Built only with `--features tch` (see README, Backends).
#![cfg(all(feature = "tch", feature = "flex"))]

mod common;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::store::{ModuleSnapshot, SafetensorsStore};
use common::*;
use rslad::attacks::{parse_list, AttackContext};
use rslad::data::DatasetKind;
use rslad::eval::{evaluate, EvalConfig};
use rslad::methods::{self, MethodConfig, StepInput};
use rslad::models::{Model, ModelSpec};
use rslad::train::sgd::Sgd;

#[allow(deprecated)]
fn devices() -> [Device; 2] {
    [Device::flex(), Device::libtorch()]
}

fn copy_to(model: &Model, device: &Device) -> Model {
    let mut store = SafetensorsStore::from_bytes(None).skip_enum_variants(true);
    model.valid().save_into(&mut store).unwrap();
    let bytes = store.get_bytes().unwrap();
    let mut m = model.spec.build(device).unwrap();
    m.load_from(&mut SafetensorsStore::from_bytes(Some(bytes)).skip_enum_variants(true))
        .unwrap();
    m
}

fn weights(m: &Model) -> Vec<f32> {
    m.valid()
        .collect(None, None, true)
        .into_iter()
        .flat_map(|t| {
            t.to_bytes()
                .unwrap()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn training_step_and_attack_agree_across_backends() {
    let data = temp_dir("backends");
    fake_fashion(&data, 32, 64, false);
    let train = rslad::data::load(
        DatasetKind::FashionMnist,
        Some(&data),
        rslad::data::Split::Train,
        None,
    )
    .unwrap();
    let spec = ModelSpec::for_dataset("cnn-small".parse().unwrap(), DatasetKind::FashionMnist);
    let [flex, tch] = devices();
    flex.seed(1);
    let base = spec.build(&flex).unwrap();
    let batch = rslad::data::BatchIter::new(
        std::sync::Arc::new(train),
        rslad::data::LoaderConfig::sequential(32),
    )
    .next()
    .unwrap();
    let mut results = Vec::new();
    for device in [flex.clone(), tch.clone()] {
        let student = copy_to(&base, &device.clone().autodiff());
        let (x, y) = batch.to_tensors(spec.input, &device);
        let ids: Vec<u64> = (0..32).collect();
        let cfg = MethodConfig::defaults("sat", DatasetKind::FashionMnist, 10);
        let method = methods::build(&cfg).unwrap();
        let input = StepInput {
            x,
            y,
            ids: &ids,
            epoch: 0,
            seed: 3,
            teacher_logits: None,
        };
        let out = methods::step(method.as_ref(), &student, None, &input);
        let loss = out.loss.clone().into_scalar::<f32>();
        let grads = GradientsParams::from_grads(out.loss.backward(), &student);
        let updated = Sgd::new(0.9, 2e-4).step(0.05, student, grads);
        results.push((loss, weights(&updated)));
    }
    let (a, b) = (&results[0], &results[1]);
    assert!((a.0 - b.0).abs() < 1e-4, "loss {} vs {}", a.0, b.0);
    let worst = max_abs_diff(&a.1, &b.1);
    assert!(worst < 1e-4, "weights differ by {worst}");

    let test = rslad::data::load(
        DatasetKind::FashionMnist,
        Some(&data),
        rslad::data::Split::Test,
        None,
    )
    .unwrap();
    let mut acc = Vec::new();
    for device in [flex, tch] {
        let model = copy_to(&base, &device);
        let ctx = AttackContext {
            eps: 0.1,
            seed: 0,
            device: &device,
            target: &spec,
        };
        let attacks = parse_list("pgd-sat,apgd-ce:steps=20", &ctx).unwrap();
        let cfg = EvalConfig {
            eps: 0.1,
            batch_size: 64,
            seed: 0,
            sanity_checks: false,
        };
        let r = evaluate(
            &model,
            test.clone(),
            0,
            &attacks,
            &cfg,
            &device,
            &mut |_| {},
        );
        acc.push(
            r.attacks
                .iter()
                .map(|a| a.robust_accuracy)
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(acc[0], acc[1], "robust accuracy on flex and tch");
}
