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
