//! The benchmark in its short mode: it runs and reports; speed is never asserted.

mod common;

use std::process::Command;

#[test]
fn bench_runs_and_reports_every_row() {
    let data = tempfile::tempdir().unwrap();
    common::fake_fashion(data.path(), 1280, 16, false);
    let json = std::env::temp_dir().join(format!("rslad-bench-{}.json", std::process::id()));
    let o = Command::new(env!("CARGO_BIN_EXE_rslad"))
        .args([
            "bench",
            "--model",
            "cnn-small",
            "--batch-size",
            "8",
            "--reps",
            "1",
            "--no-pytorch",
            // AutoAttack rows, shortened: a 10-step SAT model, 2 iterations, 10 queries.
            "--aa-images",
            "8",
            "--aa-train-steps",
            "10",
            "--aa-steps",
            "2",
            "--aa-queries",
            "10",
            "--data-dir",
        ])
        .arg(data.path())
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let table = String::from_utf8_lossy(&o.stdout);
    println!("{table}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = doc["rows"].as_array().unwrap();
    let steps: Vec<&str> = rows.iter().map(|r| r["step"].as_str().unwrap()).collect();
    for s in [
        "train natural",
        "train sat",
        "train trades",
        "train ard",
        "train iad",
        "train rslad",
        "attack step",
        "eval forward",
        "attack FGSM",
        "attack APGD-CE",
        "AA",
        "AA APGD-CE",
        "AA APGD-T",
        "AA FAB-T",
        "AA Square",
    ] {
        assert!(steps.contains(&s), "{s} in {steps:?}");
    }
    // Component rows can attack no point at all; every other row measured some images.
    assert!(rows
        .iter()
        .filter(|r| !r["step"].as_str().unwrap().starts_with("AA "))
        .all(|r| r["images_per_second"].as_f64().unwrap() > 0.0));
    assert!(table.contains("| cnn-small | train rslad | 8 |"));
    assert!(table.contains("| cnn-small | AA | 8 |"), "{table}");
    // Points attacked by each component never grow along AutoAttack's chain.
    let attacked: Vec<u64> = rows
        .iter()
        .filter(|r| r["step"].as_str().unwrap().starts_with("AA "))
        .map(|r| r["batch"].as_u64().unwrap())
        .collect();
    assert!(attacked.windows(2).all(|w| w[1] <= w[0]), "{attacked:?}");

    // The cached model, evaluated with `rslad eval` writing to a pipe: AutoAttack reports
    // each component with the points still robust, as lines (not a terminal).
    let checkpoint = doc["autoattack"][0]["checkpoint"].as_str().unwrap();
    let e = Command::new(env!("CARGO_BIN_EXE_rslad"))
        .args([
            "eval",
            "--dataset",
            "fashion-mnist",
            "--attacks",
            "aa:steps=2:queries=10",
            "--n-examples",
            "8",
            "--no-sanity",
            "--checkpoint",
            checkpoint,
            "--data-dir",
        ])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
    let log = String::from_utf8_lossy(&e.stderr);
    println!("{log}");
    assert!(
        log.contains("batch: APGD-CE: ") && log.contains("still robust"),
        "{log}"
    );
    assert!(log.contains("AA: done, 8/8 examples"), "{log}");
}

/// The convolution rows: the PyTorch reference lists each distinct convolution of the model
/// (`_convs`) and times it under the name rslad's row gets, so the two sides meet row by row.
/// Needs torch (CI installs it); elsewhere the reference is skipped and so is this test.
#[test]
fn conv_rows_meet_the_pytorch_reference_by_name() {
    let torch = Command::new("python3")
        .args(["-c", "import torch"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !torch {
        eprintln!("python3 cannot import torch: the reference and its conv rows are skipped");
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/pytorch_bench.py");
    let o = Command::new("python3")
        .args([
            script,
            "--model",
            "cnn-small",
            "--batch",
            "2",
            "--reps",
            "1",
        ])
        .args(["--threads", "1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let reference: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let convs: Vec<rslad::bench::ConvShape> =
        serde_json::from_value(reference["_convs"].clone()).unwrap();
    // cnn-small: 1->32 at 28x28, 32->64 stride 2, 64->128 stride 2.
    let labels: Vec<String> = convs.iter().map(|c| c.label()).collect();
    assert_eq!(
        labels,
        [
            "conv 3x3 1->32 @28x28 s1",
            "conv 3x3 32->64 @28x28 s2",
            "conv 3x3 64->128 @14x14 s2"
        ]
    );
    let device = rslad::backend::default_device();
    let rows = rslad::bench::conv_rows(
        "cnn-small",
        &convs,
        2,
        1,
        &device,
        &mut rslad::bench::NoProbe,
    );
    assert_eq!(rows.len(), 2 * convs.len());
    for r in &rows {
        assert!(
            reference[&r.step].as_f64().is_some_and(|ms| ms > 0.0),
            "{} has no reference time",
            r.step
        );
        assert!(r.median_ms > 0.0 && r.images_per_second > 0.0, "{r:?}");
    }
}
