//! The run-time device choice (`RSLAD_DEVICE`, README Backends) as the CLI sees it, and the
//! helpers of scripts/gpu-check.sh: the Fashion-MNIST subsets it carries and the pass/fail
//! rules of its summary (issue 11: outcomes equal on >= 99%, accuracies within 0.4 pp, step
//! loss within 1e-3 relative).

mod common;

use common::*;
use rslad::data::{DatasetKind, Split};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn rslad(env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rslad"));
    c.env_remove("RSLAD_DEVICE").env_remove("RSLAD_TCH_CUDA");
    for (k, v) in env {
        c.env(k, v);
    }
    c.args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Only the default build (flex alone) knows what every answer must be.
const FLEX_ONLY: bool = cfg!(all(
    feature = "flex",
    not(feature = "tch"),
    not(feature = "vulkan"),
    not(feature = "cuda")
));

#[test]
fn version_names_backend_and_device_and_bad_choices_are_errors_not_panics() {
    if !FLEX_ONLY {
        return;
    }
    for env in [vec![], vec![("RSLAD_DEVICE", "cpu")]] {
        let o = rslad(&env, &["--version"]);
        assert!(o.status.success(), "{}", text(&o));
        assert!(
            text(&o).contains("backend: flex on Device<Flex"),
            "{}",
            text(&o)
        );
    }
    let o = rslad(&[("RSLAD_DEVICE", "gpu")], &["models"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("RSLAD_DEVICE=gpu") && t.contains("no GPU backend (it has flex)"),
        "{t}"
    );
    assert!(
        t.contains("--features vulkan") && !t.contains("panicked"),
        "{t}"
    );
    // `report` only reads files: a device choice this build cannot honour does not stop it.
    let o = rslad(
        &[("RSLAD_DEVICE", "gpu")],
        &["report", "/nonexistent-rslad-folder"],
    );
    assert!(!text(&o).contains("no GPU backend"), "{}", text(&o));
    let o = rslad(&[("RSLAD_DEVICE", "tpu")], &["models"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("RSLAD_DEVICE=tpu: unknown device") && !text(&o).contains("panicked"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_runs_config_records_the_backend_and_device_that_ran() {
    if !FLEX_ONLY {
        return;
    }
    let data = temp_dir("gpu-check-config");
    fake_fashion(&data, 16, 8, true);
    let out = data.join("run");
    let o = rslad(
        &[("RSLAD_DEVICE", "cpu")],
        &[
            "train",
            "--method",
            "natural",
            "--dataset",
            "fashion-mnist",
            "--model",
            "cnn-small",
            "--data-dir",
            data.to_str().unwrap(),
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--monitor-examples",
            "0",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let config = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(
        config.contains("backend = \"flex on Device<Flex(Cpu)>\""),
        "{config}"
    );
}

fn helper() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/gpu_check.py")
}

fn python(args: &[&str]) -> Option<Output> {
    let o = Command::new("python3").arg(helper()).args(args).output();
    match o {
        Ok(o) => Some(o),
        Err(_) => {
            eprintln!("python3 not found: skipping");
            None
        }
    }
}

#[test]
fn subsets_are_the_first_images_of_each_split_in_a_format_rslad_reads() {
    let src = temp_dir("gpu-check-src");
    fake_fashion(&src, 40, 20, false);
    let dst = src.join("subset");
    let Some(o) = python(&[
        "subsets",
        src.to_str().unwrap(),
        dst.to_str().unwrap(),
        "25",
        "7",
    ]) else {
        return;
    };
    assert!(o.status.success(), "{}", text(&o));
    for (split, n) in [(Split::Train, 25), (Split::Test, 7)] {
        let full = rslad::data::load(DatasetKind::FashionMnist, Some(&src), split, None).unwrap();
        let part = rslad::data::load(DatasetKind::FashionMnist, Some(&dst), split, None).unwrap();
        assert_eq!(part.len(), n);
        assert_eq!(part.labels[..], full.labels[..n]);
        assert_eq!(part.images[..], full.images[..n * 784]);
    }
    let o = python(&[
        "subsets",
        src.to_str().unwrap(),
        dst.to_str().unwrap(),
        "41",
        "7",
    ])
    .unwrap();
    assert!(!o.status.success() && text(&o).contains("asked for 41 images, the file has 40"));
}

fn eval_json(backend: &str, clean: &str, attacks: &[(&str, &str)]) -> serde_json::Value {
    let acc = |s: &str| s.chars().filter(|&c| c == '1').count() as f64 / s.len() as f64;
    json!({
        "backend": backend,
        "eps": 0.1,
        "example_ids": (0..clean.len() as u64).collect::<Vec<_>>(),
        "clean_accuracy": acc(clean),
        "clean": clean,
        "attacks": attacks.iter().map(|(name, r)| json!({
            "name": name, "robust_accuracy": acc(r), "robust": r, "seconds": 1.0
        })).collect::<Vec<_>>(),
    })
}

fn write(dir: &Path, name: &str, v: &serde_json::Value) {
    std::fs::write(dir.join(name), v.to_string()).unwrap();
}

/// Runs the summary on a CPU and a GPU evaluation of 200 examples whose pgd outcomes differ on
/// `flips` examples (half robust→broken, half broken→robust when `balanced`), and the given
/// step losses. Returns (passed, summary.md).
fn summary(flips: usize, balanced: bool, losses: (f64, f64)) -> Option<(bool, String)> {
    let work = temp_dir(&format!(
        "gpu-check-summary-{flips}-{balanced}-{}",
        losses.1
    ));
    let clean: String = (0..200)
        .map(|i| if i % 10 == 0 { '0' } else { '1' })
        .collect();
    let pgd_cpu: String = (0..200)
        .map(|i| if i % 2 == 0 { '1' } else { '0' })
        .collect();
    let mut pgd_gpu: Vec<char> = pgd_cpu.chars().collect();
    for k in 0..flips {
        let i = if balanced && k % 2 == 1 {
            2 * k + 1
        } else {
            2 * k
        };
        pgd_gpu[i] = if pgd_gpu[i] == '1' { '0' } else { '1' };
    }
    let pgd_gpu: String = pgd_gpu.into_iter().collect();
    write(
        &work,
        "eval-cpu.json",
        &eval_json("flex", &clean, &[("pgd-sat", &pgd_cpu)]),
    );
    write(
        &work,
        "eval-gpu.json",
        &eval_json("vulkan", &clean, &[("pgd-sat", &pgd_gpu)]),
    );
    write(&work, "step-cpu.json", &json!({ "train_loss": losses.0 }));
    write(&work, "step-gpu.json", &json!({ "train_loss": losses.1 }));
    let out = work.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let o = python(&["summary", work.to_str().unwrap(), out.to_str().unwrap()])?;
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    let verdict: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(o.status.success(), verdict["verdict"] == "PASS", "{md}");
    Some((o.status.success(), md))
}

#[test]
fn summary_passes_within_the_thresholds_and_fails_outside_each_of_them() {
    // 2 of 200 outcomes differ (99.0% equal), one each way: accuracies equal. Passes.
    let Some((ok, md)) = summary(2, true, (1.0, 1.0005)) else {
        return;
    };
    assert!(ok && md.contains("Verdict: PASS"), "{md}");
    // 3 of 200 differ: 98.5% equal. Fails on outcomes.
    let (ok, md) = summary(3, true, (1.0, 1.0)).unwrap();
    assert!(
        !ok && md.contains("pgd-sat: per-example outcomes equal on 98.50%"),
        "{md}"
    );
    // 2 of 200 differ the same way: 99% equal but accuracies 1 pp apart. Fails on accuracy.
    let (ok, md) = summary(2, false, (1.0, 1.0)).unwrap();
    assert!(
        !ok && md.contains("pgd-sat: accuracies differ by 1.00 pp"),
        "{md}"
    );
    // Losses 2e-3 apart relative. Fails on the step.
    let (ok, md) = summary(0, true, (1.0, 1.002)).unwrap();
    assert!(!ok && md.contains("training step: losses differ"), "{md}");
}
