//! Training: over-fitting a tiny set, resuming a killed run bit for bit, and errors that stop a
//! run before it starts.

mod common;

use burn::module::Module;
use burn::optim::GradientsParams;
use common::*;
use rslad::data::DatasetKind;
use rslad::methods::{self, MethodConfig, StepInput};
use rslad::models::{Classifier, ModelSpec};
use rslad::train::sgd::Sgd;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// cnn-small memorises 64 noise images with random labels: 100% training accuracy (eval mode).
#[test]
fn overfits_64_images() {
    let device = device();
    device.seed(3);
    let n = 64;
    let mut rng = Lcg(9);
    let x: Vec<f32> = (0..n * 784).map(|_| rng.next_f32()).collect();
    let y: Vec<i64> = (0..n).map(|_| rng.below(10) as i64).collect();
    let spec = ModelSpec::for_dataset("cnn-small".parse().unwrap(), DatasetKind::FashionMnist);
    let mut model = spec.build(&device.clone().autodiff()).unwrap();
    let method = methods::build(&MethodConfig::defaults(
        "natural",
        DatasetKind::FashionMnist,
        1,
    ))
    .unwrap();
    let mut sgd = Sgd::new(0.9, 0.0);
    let ids: Vec<u64> = (0..n as u64).collect();
    let xt = tensor4(x, [n, 1, 28, 28]);
    let yt = labels(&y);
    for step in 0..150 {
        let input = StepInput {
            x: xt.clone(),
            y: yt.clone(),
            ids: &ids,
            epoch: 0,
            seed: step,
            teacher_logits: None,
        };
        let out = methods::step(method.as_ref(), &model, None, &input);
        let grads = GradientsParams::from_grads(out.loss.backward(), &model);
        model = sgd.step(0.05, model, grads);
    }
    let pred: Vec<i64> = model
        .valid()
        .logits(xt)
        .argmax(1)
        .reshape([n])
        .into_data()
        .try_into_vec_as()
        .unwrap();
    let acc = pred.iter().zip(&y).filter(|(a, b)| a == b).count();
    assert_eq!(acc, n, "training accuracy {acc}/{n}");
}

fn rslad_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rslad"))
}

/// Tensor name → raw little-endian bytes of a safetensors file.
fn tensors(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| (k, v.data().to_vec()))
        .collect()
}

fn metrics_without_time(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("seconds");
            v.as_object_mut().unwrap().remove("images_per_second");
            v
        })
        .collect()
}

fn epochs_done(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("state.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["epochs_done"].as_u64())
        .unwrap_or(0) as usize
}

/// A SAT run killed (SIGKILL) in the middle of its second epoch and resumed ends with exactly
/// the weights, optimizer state and metrics of the same run never interrupted.
#[test]
fn killed_run_resumes_bit_for_bit() {
    let data = temp_dir("resume-data");
    fake_fashion(&data, 384, 64, true);
    let args = |out: &Path| {
        let mut c = rslad_bin();
        c.args([
            "train",
            "--method",
            "sat",
            "--dataset",
            "fashion-mnist",
            "--model",
            "cnn-small",
            "--epochs",
            "3",
        ])
        .args([
            "--batch-size",
            "32",
            "--lr",
            "0.05",
            "--attack-steps",
            "3",
            "--monitor-examples",
            "32",
        ])
        .arg("--data-dir")
        .arg(&data)
        .arg("--out")
        .arg(out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
        c
    };
    let whole = temp_dir("resume-whole");
    assert!(args(&whole).status().unwrap().success());

    let broken = temp_dir("resume-broken");
    let mut child = args(&broken).spawn().unwrap();
    let start = Instant::now();
    while epochs_done(&broken) < 1 {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "first epoch never finished"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "run ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(400)); // well into epoch 2
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(epochs_done(&broken), 1, "killed during the second epoch");

    let status = rslad_bin()
        .args(["train", "--resume"])
        .arg(&broken)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(epochs_done(&broken), 3);
    assert_eq!(
        tensors(&whole.join("last.safetensors")),
        tensors(&broken.join("last.safetensors"))
    );
    assert_eq!(
        tensors(&whole.join("best.safetensors")),
        tensors(&broken.join("best.safetensors"))
    );
    assert_eq!(metrics_without_time(&whole), metrics_without_time(&broken));
    let state = |d: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(d.join("state.json")).unwrap()).unwrap()
    };
    let (a, b) = (state(&whole), state(&broken));
    assert_eq!(
        tensors(&whole.join(a["optimizer"].as_str().unwrap())),
        tensors(&broken.join(b["optimizer"].as_str().unwrap()))
    );
}

#[test]
fn bad_setups_fail_before_training_with_clear_errors() {
    let data = temp_dir("bad-setup");
    fake_fashion(&data, 16, 16, false);
    let out = data.join("run");
    let run = |extra: &[&str]| {
        let o = rslad_bin()
            .args(["train", "--dataset", "fashion-mnist", "--epochs", "1"])
            .arg("--data-dir")
            .arg(&data)
            .arg("--out")
            .arg(&out)
            .args(extra)
            .output()
            .unwrap();
        assert!(!o.status.success(), "{extra:?} should fail");
        String::from_utf8_lossy(&o.stderr).to_string()
    };
    assert!(run(&["--method", "rslad"]).contains("--teacher"));
    assert!(
        run(&["--method", "rslad", "--teacher", "/nonexistent.safetensors"]).contains("not found")
    );
    assert!(run(&["--model", "vgg19"]).contains("unknown model"));
    assert!(run(&["--eps", "8"]).contains("[0,1] pixel scale"));
    let e = run(&["--method", "trades", "--bn-passes", "all"]);
    assert!(
        e.contains("--bn-passes") && e.contains("official or minimal"),
        "{e}"
    );
    // A teacher for another dataset (CIFAR-10 shapes).
    let teacher = data.join("cifar-teacher.safetensors");
    let spec = ModelSpec::for_dataset("cnn-small".parse().unwrap(), DatasetKind::Cifar10);
    rslad::models::save_model(&spec.build(&device()).unwrap(), &teacher, &[]).unwrap();
    let e = run(&["--method", "rslad", "--teacher", teacher.to_str().unwrap()]);
    assert!(e.contains("3x32x32"), "{e}");
    // A teacher that is not the model it claims to be.
    let e = run(&[
        "--method",
        "ard",
        "--teacher",
        teacher.to_str().unwrap(),
        "--teacher-model",
        "cnn-large",
    ]);
    assert!(e.contains("cnn-large") && e.contains("cnn-small"), "{e}");
    // A truncated checkpoint.
    let bytes = std::fs::read(&teacher).unwrap();
    std::fs::write(&teacher, &bytes[..bytes.len() / 2]).unwrap();
    let e = run(&["--method", "rslad", "--teacher", teacher.to_str().unwrap()]);
    assert!(e.contains("truncated"), "{e}");
}

/// The real run: natural training of cnn-small for 2 epochs on the first 10,000 Fashion-MNIST
/// training images reaches at least 80% on the full 10,000-image test set.
#[test]
fn real_fashion_mnist_natural_run() {
    let dir = fashion_dir();
    let out = temp_dir("real-natural");
    let o = rslad_bin()
        .args([
            "train",
            "--method",
            "natural",
            "--dataset",
            "fashion-mnist",
            "--model",
            "cnn-small",
        ])
        .args([
            "--epochs",
            "2",
            "--train-limit",
            "10000",
            "--batch-size",
            "64",
            "--lr",
            "0.05",
            "--milestones",
            "2",
        ])
        .arg("--data-dir")
        .arg(&dir)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let last = metrics_without_time(&out).pop().unwrap();
    let acc = last["test_accuracy"].as_f64().unwrap();
    eprintln!(
        "real run: test accuracy {:.2}% on 10,000 test images",
        100.0 * acc
    );
    assert!(acc >= 0.80, "test accuracy {acc}");
    // The checkpoint evaluates to the same clean accuracy through `rslad eval`.
    let e = rslad_bin()
        .args([
            "eval",
            "--dataset",
            "fashion-mnist",
            "--attacks",
            "none",
            "--checkpoint",
        ])
        .arg(out.join("last.safetensors"))
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
    let table = String::from_utf8_lossy(&e.stdout);
    assert!(table.contains(&format!("{:.2}", 100.0 * acc)), "{table}");
}

/// A run directory resumes only the run its `state.json` records: other settings are refused
/// even when `config.toml` is gone, and so are a teacher file that now holds other weights and
/// other training data.
#[test]
fn a_run_resumes_only_with_its_settings_and_teacher() {
    let data = temp_dir("resume-guard");
    fake_fashion(&data, 16, 16, false);
    let out = data.join("run");
    let spec = ModelSpec::for_dataset("cnn-small".parse().unwrap(), DatasetKind::FashionMnist);
    let teacher = data.join("teacher.safetensors");
    let device = device();
    rslad::models::save_model(&spec.build(&device).unwrap(), &teacher, &[]).unwrap();
    let original = std::fs::read(&teacher).unwrap();
    let train = |epochs: &str, lr: &str| {
        rslad_bin()
            .args(["train", "--dataset", "fashion-mnist", "--method", "rslad"])
            .args([
                "--train-limit",
                "16",
                "--test-limit",
                "16",
                "--batch-size",
                "8",
            ])
            .args([
                "--monitor-examples",
                "8",
                "--attack-steps",
                "1",
                "--milestones",
                "5",
            ])
            .args(["--epochs", epochs, "--lr", lr])
            .arg("--teacher")
            .arg(&teacher)
            .arg("--data-dir")
            .arg(&data)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap()
    };
    // A refused command: it fails and its message says `why`.
    let refused = |o: std::process::Output, why: &[&str]| {
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && why.iter().all(|w| e.contains(w)),
            "{e}"
        );
    };
    let o = train("1", "0.1");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::remove_file(out.join("config.toml")).unwrap();
    refused(train("2", "0.2"), &["other settings", "lr: 0.1 -> 0.2"]);
    assert_eq!(epochs_done(&out), 1);
    rslad::models::save_model(&spec.build(&device).unwrap(), &teacher, &[]).unwrap();
    assert_ne!(std::fs::read(&teacher).unwrap(), original);
    refused(train("2", "0.1"), &["other teacher weights"]);
    assert_eq!(epochs_done(&out), 1);
    std::fs::write(&teacher, &original).unwrap();
    let o = train("2", "0.1");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(epochs_done(&out), 2);
    // One changed training pixel: the run is refused until the images it saw are back.
    let images = data.join("train-images-idx3-ubyte");
    let kept = std::fs::read(&images).unwrap();
    let mut changed = kept.clone();
    changed[16] ^= 0xff;
    std::fs::write(&images, &changed).unwrap();
    refused(train("3", "0.1"), &["other training data"]);
    assert_eq!(epochs_done(&out), 2);
    std::fs::write(&images, &kept).unwrap();
    let o = train("3", "0.1");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(epochs_done(&out), 3);
    // The same images and teacher in another folder are the same run: `--resume` takes the
    // new places, and still refuses other images there.
    let moved = data.join("moved");
    std::fs::create_dir_all(&moved).unwrap();
    for f in ["train-images", "train-labels", "t10k-images", "t10k-labels"] {
        let name = format!("{f}-idx{}-ubyte", if f.ends_with("images") { 3 } else { 1 });
        std::fs::copy(data.join(&name), moved.join(&name)).unwrap();
    }
    std::fs::copy(&teacher, moved.join("teacher.safetensors")).unwrap();
    // Given relative to another working directory, they are recorded absolute.
    let resume_with = |epochs: &str, teacher: &str| {
        rslad_bin()
            .current_dir(&data)
            .args(["train", "--resume"])
            .arg(&out)
            .args([
                "--epochs",
                epochs,
                "--data-dir",
                "moved",
                "--teacher",
                teacher,
            ])
            .output()
            .unwrap()
    };
    let resume = |epochs: &str| resume_with(epochs, "moved/teacher.safetensors");
    let o = resume("4");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(epochs_done(&out), 4);
    let recorded = std::fs::read_to_string(out.join("config.toml")).unwrap();
    let quoted = |p: &std::path::Path| format!("\"{}\"", p.display());
    assert!(recorded.contains(&quoted(&moved)), "{recorded}");
    // A refused resume (here a teacher that is not there) leaves the run's record as it was.
    refused(
        resume_with("5", "moved/nosuch.safetensors"),
        &["nosuch.safetensors"],
    );
    assert_eq!(
        std::fs::read_to_string(out.join("config.toml")).unwrap(),
        recorded
    );
    std::fs::write(moved.join("train-images-idx3-ubyte"), &changed).unwrap();
    refused(resume("5"), &["other training data"]);
    assert_eq!(epochs_done(&out), 4);
}
