//! The benchmark in its short mode: it runs and reports; speed is never asserted.

use std::process::Command;

#[test]
fn bench_runs_and_reports_every_row() {
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
            "--json",
        ])
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
    ] {
        assert!(steps.contains(&s), "{s} in {steps:?}");
    }
    assert!(rows
        .iter()
        .all(|r| r["images_per_second"].as_f64().unwrap() > 0.0));
    assert!(table.contains("| cnn-small | train rslad | 8 |"));
}
