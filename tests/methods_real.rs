//! A short real run of every method on Fashion-MNIST: each robust method, and each student
//! distilled from the same robust teacher, ends more robust than natural training.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

fn train(out: &Path, method: &str, limit: &str, extra: &[&str]) -> f64 {
    let o = Command::new(env!("CARGO_BIN_EXE_rslad"))
        .args([
            "train",
            "--method",
            method,
            "--dataset",
            "fashion-mnist",
            "--model",
            "cnn-small",
        ])
        .args([
            "--train-limit",
            limit,
            "--test-limit",
            "500",
            "--monitor-examples",
            "300",
        ])
        .args([
            "--batch-size",
            "64",
            "--lr",
            "0.05",
            "--milestones",
            "none",
            "--attack-steps",
            "5",
            "--attack-step-size",
            "0.03",
        ])
        .arg("--data-dir")
        .arg(fashion_dir())
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{method}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let last = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(last.lines().last().unwrap()).unwrap();
    // Natural training has no monitor: measure its PGD-20 accuracy the same way.
    if method == "natural" {
        let device = device();
        let model =
            rslad::models::load_model(&out.join("last.safetensors"), &device, None).unwrap();
        let test = rslad::data::load(
            rslad::data::DatasetKind::FashionMnist,
            Some(&fashion_dir()),
            rslad::data::Split::Test,
            Some(300),
        )
        .unwrap();
        return rslad::train::monitor(&model, &std::sync::Arc::new(test), 0.1, 0, 256, &device).1;
    }
    last["robust_accuracy"].as_f64().unwrap()
}

#[test]
fn every_method_beats_natural_training_in_robust_accuracy() {
    let root = temp_dir("methods-real");
    let natural = train(&root.join("natural"), "natural", "2000", &["--epochs", "2"]);
    let teacher = root.join("teacher");
    let teacher_robust = train(&teacher, "sat", "3000", &["--epochs", "3"]);
    eprintln!("natural PGD-20 {natural:.3}, teacher (SAT) {teacher_robust:.3}");
    assert!(teacher_robust > natural);
    let best = teacher.join("best.safetensors");
    let t = best.to_str().unwrap();
    for method in ["sat", "trades", "ard", "iad", "rslad"] {
        let mut extra = vec!["--epochs", "2"];
        if matches!(method, "ard" | "iad" | "rslad") {
            extra.extend(["--teacher", t, "--teacher-model", "cnn-small"]);
        }
        // Two epochs are too few for the official 1/C-scaled KL (docs/spec/methods.md), and for
        // ARD's τ = 30, whose τ²-scaled KL is a logit regression with gradient (s − t)/C: it
        // needs the long schedules it was made for. The test checks that the methods train.
        if matches!(method, "ard" | "rslad") {
            extra.extend(["--kl-reduction", "batchmean"]);
        }
        if method == "ard" {
            extra.extend(["--temperature", "4"]);
        }
        let robust = train(&root.join(method), method, "2000", &extra);
        eprintln!("{method}: PGD-20 {robust:.3}");
        assert!(
            robust > natural + 0.05,
            "{method}: {robust} vs natural {natural}"
        );
    }
}
