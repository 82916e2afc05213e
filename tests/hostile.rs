//! Hostile and malformed input (issue 12, and a second probe of the CLI): run directories,
//! checkpoints, attack strings, configs, compressed files, result shards and output paths as
//! someone else (or a damaged disk, or a slip of the shell) may hand them over.
//! Every case must end in a clear error naming the file or flag, never a panic, an
//! out-of-memory abort or a silently wrong number.

mod common;

use common::*;
use rslad::attacks::{self, AttackContext};
use rslad::data::{self, DatasetKind, Split};
use rslad::eval::{self, AttackResult, EvalConfig, EvalResults, StageResult};
use rslad::models::{load_model, save_model, Arch, ModelSpec};
use rslad::train::RunDir;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A refusal: exit code 1 (not a panic's 101 or a signal), and stderr naming `needle`.
fn refused(args: &[&str], needle: &str) -> String {
    let (code, _, err) = rslad(args);
    assert_eq!(code, 1, "rslad {args:?} should fail cleanly:\n{err}");
    assert!(!err.contains("panicked"), "rslad {args:?} panicked:\n{err}");
    assert!(
        err.contains(needle),
        "rslad {args:?}: error should mention '{needle}':\n{err}"
    );
    err
}

/// Runs `rslad` and returns (exit code, stderr, peak resident memory in MiB). The child is
/// reaped by `wait4`, which also returns its resource usage.
#[allow(clippy::zombie_processes)]
fn rslad_peak_memory(args: &[&str]) -> (i32, String, u64) {
    let child = Command::new(env!("CARGO_BIN_EXE_rslad"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut stderr = child.stderr.unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).unwrap();
        s
    });
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    // ru_maxrss is in KiB on Linux.
    (code, reader.join().unwrap(), usage.ru_maxrss as u64 / 1024)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn small_spec() -> ModelSpec {
    ModelSpec::for_dataset(Arch::CnnSmall, DatasetKind::FashionMnist)
}

/// A freshly initialised cnn-small for Fashion-MNIST, saved at `path`.
fn save_small(path: &Path) {
    let device = device();
    device.seed(7);
    let model = small_spec().build(&device).unwrap();
    save_model(&model, path, &[]).unwrap();
}

/// A safetensors file holding one tensor `x` (shape `shape`, as written in the header) and the
/// given `rslad.spec` metadata.
fn write_raw_checkpoint(path: &Path, spec_json: &str, shape: &str, data_len: usize) {
    let header = format!(
        r#"{{"__metadata__":{{"rslad.spec":{}}},"x":{{"dtype":"F32","shape":{shape},"data_offsets":[0,{data_len}]}}}}"#,
        serde_json::to_string(spec_json).unwrap()
    );
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(std::iter::repeat_n(0u8, data_len));
    std::fs::write(path, bytes).unwrap();
}

/// Rewrites the floats of the tensors of a saved checkpoint whose name passes `pick` as
/// `value`, keeping its metadata.
fn rewrite_checkpoint(path: &Path, pick: impl Fn(&str) -> bool, value: f32) {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(name, v)| {
            let data = if pick(&name) {
                std::iter::repeat_n(value.to_le_bytes(), v.data().len() / 4)
                    .flatten()
                    .collect()
            } else {
                v.data().to_vec()
            };
            (name, v.shape().to_vec(), data)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, shape, d)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), d)
                    .unwrap(),
            )
        })
        .collect();
    let out = safetensors::serialize(views, meta.metadata().clone()).unwrap();
    std::fs::write(path, out).unwrap();
}

fn attack_ctx_parse(list: &str) -> Result<usize, String> {
    let device = device();
    let spec = small_spec();
    let ctx = AttackContext {
        eps: 0.1,
        seed: 0,
        device: &device,
        target: &spec,
    };
    attacks::parse_list(list, &ctx)
        .map(|v| v.len())
        .map_err(|e| e.to_string())
}

/// A one-epoch training run on 16 images into `run`.
fn tiny_train<'a>(data: &'a Path, run: &'a Path) -> Vec<&'a str> {
    vec![
        "train",
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        s(data),
        "--train-limit",
        "16",
        "--test-limit",
        "8",
        "--batch-size",
        "16",
        "--monitor-examples",
        "8",
        "--epochs",
        "1",
        "--out",
        s(run),
    ]
}

/// `rslad eval` of `ckpt` on the Fashion-MNIST-format `data`, then `extra`.
fn eval_args<'a>(ckpt: &'a Path, data: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "eval",
        "--checkpoint",
        s(ckpt),
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        s(data),
    ];
    v.extend_from_slice(extra);
    v
}

/// Tiny data, a checkpoint and a run-directory root for the CLI tests.
fn setup(name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let root = temp_dir(name);
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    fake_fashion(&data, 16, 8, false);
    let ckpt = root.join("model.safetensors");
    save_small(&ckpt);
    (root, data, ckpt)
}

// ---- 1. run directories are trusted with paths ---------------------------------------------

#[test]
fn state_json_names_only_files_inside_the_run_directory() {
    let root = temp_dir("state-paths");
    let run = root.join("run");
    std::fs::create_dir_all(run.join("ckpt")).unwrap();
    let victim = root.join("victim.txt");
    std::fs::write(&victim, "keep me").unwrap();
    let state = |weights: &str, best: &str| {
        format!(
            r#"{{"epochs_done":1,"weights":"{weights}","optimizer":"ckpt/epoch-0001.optim.safetensors",
            "best":{{"epoch":1,"metric":0.5,"file":"{best}"}},"seed":0,"next_epoch":1,"teacher":null,"metrics":[{{"epoch":1,"lr":0.1,"train_loss":1.0,
            "train_accuracy":0.5,"test_accuracy":0.5,"robust_accuracy":null,
            "monitor_clean_accuracy":null,"seconds":1.0,"images_per_second":1.0}}]}}"#
        )
    };
    for (weights, best) in [
        ("../victim.txt", "ckpt/best-epoch-0001.safetensors"),
        (s(&victim), "ckpt/best-epoch-0001.safetensors"),
        ("ckpt/epoch-0001.safetensors", "/etc/passwd"),
        ("ckpt/epoch-0001.safetensors", "ckpt/../../victim.txt"),
    ] {
        std::fs::write(run.join("state.json"), state(weights, best)).unwrap();
        let err = RunDir::new(&run)
            .read_state()
            .err()
            .unwrap_or_else(|| panic!("state naming {weights} / {best} was accepted"))
            .to_string();
        assert!(err.contains("state.json"), "{err}");
        assert!(err.contains("run directory"), "{err}");
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    // Plain names in the run directory and in ckpt/ are fine.
    std::fs::write(
        run.join("state.json"),
        state(
            "ckpt/epoch-0001.safetensors",
            "ckpt/best-epoch-0001.safetensors",
        ),
    )
    .unwrap();
    assert!(RunDir::new(&run).read_state().unwrap().is_some());
}

#[test]
fn resume_refuses_a_state_that_points_outside() {
    let (root, data, _) = setup("resume-outside");
    let run = root.join("run");
    let (code, _, err) = rslad(&tiny_train(&data, &run));
    assert_eq!(code, 0, "{err}");
    let victim = root.join("victim.safetensors");
    std::fs::write(&victim, "not mine").unwrap();
    let state_path = run.join("state.json");
    let text = std::fs::read_to_string(&state_path).unwrap();
    let mut state: serde_json::Value = serde_json::from_str(&text).unwrap();
    state["weights"] = serde_json::Value::String("../victim.safetensors".into());
    std::fs::write(&state_path, state.to_string()).unwrap();
    refused(
        &["train", "--resume", s(&run), "--epochs", "2"],
        "state.json",
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "not mine");
}

// ---- 2. checkpoint metadata is checked before a model is built ---------------------------

#[test]
fn checkpoint_specs_are_checked_before_building() {
    let dir = temp_dir("bad-spec");
    let device = device();
    let cases = [
        (
            r#"{"name":"cnn-small","input":{"channels":1,"height":0,"width":28},"num_classes":10}"#,
            "height",
        ),
        (
            r#"{"name":"cnn-small","input":{"channels":1,"height":200000,"width":200000},"num_classes":10}"#,
            "height",
        ),
        (
            r#"{"name":"wrn-1000-1000","input":{"channels":3,"height":32,"width":32},"num_classes":10}"#,
            "parameters",
        ),
        (
            r#"{"name":"cnn-small","input":{"channels":1,"height":28,"width":28},"num_classes":0}"#,
            "classes",
        ),
        (
            r#"{"name":"vgg","input":{"channels":1,"height":28,"width":28},"num_classes":10}"#,
            "unknown model",
        ),
    ];
    for (i, (spec, needle)) in cases.iter().enumerate() {
        let p = dir.join(format!("bad-{i}.safetensors"));
        write_raw_checkpoint(&p, spec, "[4]", 16);
        let err = load_model(&p, &device, None)
            .err()
            .unwrap_or_else(|| panic!("{spec} was accepted"))
            .to_string();
        assert!(err.contains(needle), "{spec}: {err}");
        assert!(err.contains(&p.display().to_string()), "{err}");
    }
    // Offsets that would wrap the file-size check round to 0 (one backed by a shape, one of a
    // dtype rslad does not read) are truncation, not a 10^18-value model.
    let wrapping = |dtype: &str, shape: u64, per: u64| -> Vec<u8> {
        let mut len = 0u64;
        loop {
            let end = u64::MAX - 7 - len;
            let start = end - shape * per;
            let header = format!(
                r#"{{"__metadata__":{{"rslad.spec":{}}},"x":{{"dtype":"{dtype}","shape":[{shape}],"data_offsets":[{start},{end}]}}}}"#,
                serde_json::to_string(
                    r#"{"name":"wrn-1000-1000","input":{"channels":3,"height":32,"width":32},"num_classes":10}"#
                )
                .unwrap()
            );
            if header.len() as u64 == len {
                let mut bytes = len.to_le_bytes().to_vec();
                bytes.extend_from_slice(header.as_bytes());
                return bytes;
            }
            len = header.len() as u64;
        }
    };
    for (i, bytes) in [wrapping("F32", (1 << 60) - 1, 4), wrapping("X", 1, 0)]
        .iter()
        .enumerate()
    {
        let p = dir.join(format!("wrap-{i}.safetensors"));
        std::fs::write(&p, bytes).unwrap();
        let Err(err) = load_model(&p, &device, None) else {
            panic!("a wrapping checkpoint was accepted");
        };
        assert!(err.to_string().contains("truncated"), "{err}");
    }
    // Through the CLI: eval and export fail cleanly.
    let p = dir.join("bad-0.safetensors");
    refused(
        &[
            "eval",
            "--checkpoint",
            s(&p),
            "--dataset",
            "fashion-mnist",
            "--attacks",
            "none",
        ],
        "height",
    );
    refused(
        &[
            "export",
            "--checkpoint",
            s(&p),
            "--out",
            s(&dir.join("out.safetensors")),
        ],
        "height",
    );
}

#[test]
fn eval_checks_the_dataset_fit_before_building() {
    let (root, data, _) = setup("eval-fit");
    // A CIFAR resnet18 header with as many values as its classifier needs: refused for
    // Fashion-MNIST from the recorded spec, before the model is built and its tensors compared.
    let p = root.join("cifar.safetensors");
    write_raw_checkpoint(
        &p,
        r#"{"name":"resnet18","input":{"channels":3,"height":32,"width":32},"num_classes":10}"#,
        "[5120]",
        20480,
    );
    let err = refused(
        &[
            "eval",
            "--checkpoint",
            s(&p),
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            s(&data),
            "--attacks",
            "none",
        ],
        "3x32x32",
    );
    assert!(err.contains("fashion-mnist"), "{err}");
}

// ---- 3. attack options that do nothing ----------------------------------------------------

#[test]
fn attack_options_that_do_nothing_are_refused() {
    for (list, needle) in [
        ("pgd:step=-0.025", "step"),
        ("pgd:step=0", "step"),
        ("pgd:steps=0", "steps"),
        ("pgd:restarts=0", "restarts"),
        ("apgd-ce:restarts=0", "restarts"),
        ("apgd-t:targets=0", "targets"),
        ("fab-t:targets=0", "targets"),
        ("square:queries=0", "queries"),
        ("aa:queries=0", "queries"),
        ("pgd:eps=2", "eps"),
        ("pgd:eps=-0.1", "eps"),
        ("pgd:eps=0.3", "differs from the evaluation's eps"),
        ("apgd-t:steps=2305843009213693952", "beyond 1000000"),
        ("square:queries=1000001", "beyond 1000000"),
        ("pgd:steps=5:steps=100", "steps"),
        ("cw:kappa=nan:loss=cw", "kappa"),
        ("cw:loss=cw:kappa=-100", "kappa=-100 must be at least 0"),
        ("apgd-t:targets=10", "at most 9 other classes"),
        ("fab-t:targets=50", "at most 9 other classes"),
        ("paper,fgsm", "twice"),
        ("pgd:steps=3,pgd:steps=3", "twice"),
    ] {
        let err = attack_ctx_parse(list)
            .err()
            .unwrap_or_else(|| panic!("{list} was accepted"));
        assert!(err.contains(needle), "{list}: {err}");
    }
    assert_eq!(
        attack_ctx_parse("pgd:steps=5:step=0.01,apgd-ce:restarts=2").unwrap(),
        2
    );
    refused(
        &[
            "eval",
            "--checkpoint",
            "/nonexistent.safetensors",
            "--dataset",
            "fashion-mnist",
            "--attacks",
            "pgd:steps=5:steps=100",
        ],
        "nonexistent",
    );
}

/// An iterative attack that breaks nothing where FGSM breaks examples is flagged.
#[test]
fn an_attack_that_breaks_nothing_fgsm_breaks_is_flagged() {
    let (_, data, ckpt) = setup("noop-attack");
    let device = device();
    let model = load_model(&ckpt, &device, None).unwrap();
    let test = data::load(DatasetKind::FashionMnist, Some(&data), Split::Test, None).unwrap();
    let ctx = AttackContext {
        eps: 0.3,
        seed: 0,
        device: &device,
        target: &model.spec,
    };
    // A valid but useless setting: one step of 1e-7 from the clean point.
    let list = attacks::parse_list("pgd:steps=1:step=0.0000001:start=none", &ctx).unwrap();
    let cfg = EvalConfig {
        eps: 0.3,
        batch_size: 8,
        seed: 0,
        sanity_checks: true,
    };
    let r = eval::evaluate(&model, test.clone(), 0, &list, &cfg, &device, &mut |_| {});
    assert!(r.clean_accuracy > 0.0, "the test needs correct examples");
    assert_eq!(r.attacks[0].robust_accuracy, r.clean_accuracy);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("PGD-1") && w.contains("FGSM")),
        "{:?}",
        r.warnings
    );
    // A real attack on the same model raises no such warning.
    let list = attacks::parse_list("pgd:steps=10", &ctx).unwrap();
    let r = eval::evaluate(&model, test, 0, &list, &cfg, &device, &mut |_| {});
    assert!(
        !r.warnings.iter().any(|w| w.contains("breaks none")),
        "{:?}",
        r.warnings
    );
}

// ---- 4. batch size 0 ------------------------------------------------------------------------

#[test]
fn batch_size_zero_is_refused_everywhere() {
    let (root, data, ckpt) = setup("batch-zero");
    refused(
        &[
            "eval",
            "--checkpoint",
            s(&ckpt),
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            s(&data),
            "--batch-size",
            "0",
        ],
        "--batch-size",
    );
    refused(
        &[
            "train",
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            s(&data),
            "--eval-batch-size",
            "0",
            "--out",
            s(&root.join("run")),
        ],
        "eval_batch_size",
    );
    let toml = root.join("exp.toml");
    std::fs::write(
        &toml,
        format!(
            "dataset = 'fashion-mnist'\ndata_dir = '{}'\neval_batch_size = 0\n\
             [teacher]\nmodel = 'cnn-small'\ncheckpoint = '{}'\n",
            data.display(),
            ckpt.display()
        ),
    )
    .unwrap();
    refused(
        &[
            "experiment",
            "--config",
            s(&toml),
            "--out",
            s(&root.join("exp")),
        ],
        "eval_batch_size",
    );
}

// ---- 5. a resumed config.toml is validated like a new one -----------------------------------

#[test]
fn resume_validates_the_recorded_config() {
    let (root, data, _) = setup("resume-config");
    let run = root.join("run");
    let (code, _, err) = rslad(&tiny_train(&data, &run));
    assert_eq!(code, 0, "{err}");
    refused(&["train", "--resume", s(&run), "--epochs", "0"], "--epochs");
    let config = run.join("config.toml");
    let good = std::fs::read_to_string(&config).unwrap();
    for (from, to, needle) in [
        ("model = \"cnn-small\"", "model = \"vgg\"", "vgg"),
        ("eps = 0.1", "eps = 5.0", "eps"),
        (
            "eval_batch_size = 256",
            "eval_batch_size = 0",
            "eval_batch_size",
        ),
        ("name = \"natural\"", "name = \"magic\"", "magic"),
    ] {
        assert!(good.contains(from), "{from} not in\n{good}");
        std::fs::write(&config, good.replace(from, to)).unwrap();
        let err = refused(&["train", "--resume", s(&run), "--epochs", "2"], needle);
        assert!(err.contains("config.toml"), "{err}");
    }
    // Fewer epochs than are done: refused, and the record keeps the real count.
    std::fs::write(&config, &good).unwrap();
    let (code, _, err) = rslad(&["train", "--resume", s(&run), "--epochs", "2"]);
    assert_eq!(code, 0, "{err}");
    refused(
        &["train", "--resume", s(&run), "--epochs", "1"],
        "has already finished 2 epochs",
    );
    let recorded = std::fs::read_to_string(&config).unwrap();
    assert!(recorded.contains("epochs = 2"), "{recorded}");
}

// ---- 6. optimizer and inner-attack settings; non-finite weights ----------------------------

#[test]
fn optimizer_and_inner_attack_settings_are_validated() {
    let (root, data, _) = setup("optim-settings");
    let out = root.join("run");
    for (flag, value) in [
        ("--gamma", "-0.1"),
        ("--gamma", "0"),
        ("--momentum", "NaN"),
        ("--momentum", "1.5"),
        ("--momentum", "-0.1"),
        ("--weight-decay", "-1"),
        ("--weight-decay", "inf"),
        ("--milestones", "8,3"),
        ("--augment", "true"),
    ] {
        refused(
            &[
                "train",
                "--dataset",
                "fashion-mnist",
                "--data-dir",
                s(&data),
                &format!("{flag}={value}"),
                "--epochs",
                "10",
                "--out",
                s(&out),
            ],
            flag,
        );
    }
    for (flag, value) in [
        ("--attack-step-size", "-0.01"),
        ("--attack-step-size", "0"),
        ("--attack-steps", "0"),
        ("--beta", "-1"),
        ("--beta", "NaN"),
    ] {
        refused(
            &[
                "train",
                "--method",
                "trades",
                "--dataset",
                "fashion-mnist",
                "--data-dir",
                s(&data),
                &format!("{flag}={value}"),
                "--out",
                s(&out),
            ],
            flag,
        );
    }
}

#[test]
fn non_finite_weights_are_never_committed() {
    let (root, data, _) = setup("nan-weights");
    let run = root.join("run");
    // One batch per epoch, so the loss of the next batch never shows the damage: an f64
    // learning rate beyond f32's range turns the weights infinite or NaN in one step.
    let err = refused(
        &[
            "train",
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            s(&data),
            "--train-limit",
            "16",
            "--test-limit",
            "8",
            "--batch-size",
            "16",
            "--epochs",
            "1",
            "--lr",
            "1e300",
            "--out",
            s(&run),
        ],
        "epoch 1",
    );
    assert!(err.contains("finite"), "{err}");
    assert!(!run.join("state.json").exists());
    assert!(!run.join("best.safetensors").exists());
}

// ---- 7. decompression bombs -----------------------------------------------------------------

/// A gzip stream of `header` followed by `zeros` zero bytes.
fn gzip_bomb(path: &Path, header: &[u8], zeros: usize) {
    let f = std::fs::File::create(path).unwrap();
    let mut enc = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    enc.write_all(header).unwrap();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..zeros / chunk.len() {
        enc.write_all(&chunk).unwrap();
    }
    enc.finish().unwrap();
}

#[test]
fn a_gzip_bomb_is_not_read_fully() {
    let root = temp_dir("idx-bomb");
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    fake_fashion(&data, 16, 8, true);
    // The header announces 16 images; the stream then holds 768 MiB.
    let mut header = 0x803u32.to_be_bytes().to_vec();
    for d in [16u32, 28, 28] {
        header.extend_from_slice(&d.to_be_bytes());
    }
    gzip_bomb(&data.join("train-images-idx3-ubyte.gz"), &header, 768 << 20);
    let (code, err, peak) = rslad_peak_memory(&[
        "train",
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        s(&data),
        "--out",
        s(&root.join("run")),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("train-images-idx3-ubyte.gz"), "{err}");
    assert!(peak < 300, "peak memory {peak} MiB reading a bomb");
    // A header announcing more than any real IDX file is refused before reading (1,000,001
    // images of zeros would gzip to under a megabyte and expand to 784 MB).
    for n in [u32::MAX, 1_000_001] {
        let mut header = 0x803u32.to_be_bytes().to_vec();
        for d in [n, 28, 28] {
            header.extend_from_slice(&d.to_be_bytes());
        }
        gzip_bomb(&data.join("train-images-idx3-ubyte.gz"), &header, 1 << 20);
        let err = data::load(DatasetKind::FashionMnist, Some(&data), Split::Train, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("announces {n} records, more than the 1000000")),
            "{err}"
        );
    }
}

#[test]
fn a_pickle_bomb_is_not_read_fully() {
    let root = temp_dir("pickle-bomb");
    let pt = root.join("bomb.pt");
    {
        let f = std::fs::File::create(&pt).unwrap();
        let mut zip = zip::ZipWriter::new(f);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .large_file(true);
        zip.start_file("archive/data.pkl", opts).unwrap();
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..768 {
            zip.write_all(&chunk).unwrap();
        }
        zip.finish().unwrap();
    }
    assert!(std::fs::metadata(&pt).unwrap().len() < 8 << 20);
    let (code, err, peak) = rslad_peak_memory(&[
        "import",
        "--from",
        s(&pt),
        "--model",
        "cnn-small",
        "--dataset",
        "fashion-mnist",
        "--out",
        s(&root.join("out.safetensors")),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("data.pkl"), "{err}");
    assert!(peak < 300, "peak memory {peak} MiB reading a bomb");
}

// ---- 8. merging shards ----------------------------------------------------------------------

fn shard(ids: std::ops::Range<u64>, clean: &str, aa: &str, stages: &[&str]) -> EvalResults {
    EvalResults {
        model: small_spec(),
        checkpoint: Some("m.safetensors".into()),
        checkpoint_sha256: Some("abc".into()),
        dataset: "fashion-mnist".into(),
        eps: 0.1,
        seed: 0,
        backend: "cpu".into(),
        example_ids: ids.collect(),
        clean_accuracy: 0.0,
        clean: clean.into(),
        attacks: vec![AttackResult {
            name: "AA".into(),
            black_box: false,
            robust_accuracy: 0.0,
            robust: aa.into(),
            stages: stages
                .iter()
                .enumerate()
                .map(|(i, f)| StageResult {
                    name: format!("stage{i}"),
                    robust_accuracy: 0.0,
                    robust: f.to_string(),
                })
                .collect(),
            settings: serde_json::json!({}),
            seconds: 0.0,
        }],
        warnings: Vec::new(),
        seconds: 0.0,
        shard: None,
        data_sha256: None,
    }
}

#[test]
fn shards_are_checked_before_merging() {
    use rslad::eval::merge_shards;
    let a = shard(0..4, "1111", "1100", &["1110", "1100"]);
    // Different stage counts: an error, not a panic.
    let b = shard(4..8, "1111", "1000", &["1100"]);
    let err = merge_shards(vec![a.clone(), b]).unwrap_err().to_string();
    assert!(err.contains("stage"), "{err}");
    // Outcome strings shorter than the example ids: an error, not a wrong percentage.
    let b = shard(4..8, "11", "10", &["11", "10"]);
    let err = merge_shards(vec![a.clone(), b]).unwrap_err().to_string();
    assert!(err.contains("4 example"), "{err}");
    let b = shard(4..8, "1111", "1x00", &["1100", "1000"]);
    assert!(merge_shards(vec![a.clone(), b]).is_err());
    // Robust where the clean prediction is wrong: no attack run by rslad records that.
    for (aa, stages) in [("1000", ["1000", "1000"]), ("0000", ["1000", "0000"])] {
        let b = shard(4..8, "0111", aa, &stages);
        let err = merge_shards(vec![a.clone(), b]).unwrap_err().to_string();
        assert!(
            err.contains("example 4") && err.contains("misclassified"),
            "{err}"
        );
    }
    // A shard whose examples were all misclassified ran no stage: its stages are its outcome.
    let b = shard(4..8, "0000", "0000", &[]);
    let m = merge_shards(vec![a.clone(), b]).unwrap();
    assert_eq!(m.attacks[0].stages[0].robust, "11100000");
    assert_eq!(m.attacks[0].robust_accuracy, 0.25);
    // An empty shard is accepted.
    let empty = shard(8..8, "", "", &[]);
    let m = merge_shards(vec![a.clone(), empty]).unwrap();
    assert_eq!(m.example_ids.len(), 4);
    assert_eq!(m.clean_accuracy, 1.0);
    assert_eq!(m.attacks[0].robust_accuracy, 0.5);
    // Two shards that each report 2 clipped points keep both reports, by examples.
    let clipped = "AA: 2 adversarial points were outside the eps-ball";
    let (mut a, mut b) = (a, shard(4..8, "1111", "1100", &["1110", "1100"]));
    a.warnings.push(clipped.into());
    b.warnings.push(clipped.into());
    let m = merge_shards(vec![a, b]).unwrap();
    for part in ["examples 0..=3", "examples 4..=7"] {
        assert!(
            m.warnings.contains(&format!("{part}: {clipped}")),
            "{:?}",
            m.warnings
        );
    }
}

// ---- 9. empty data --------------------------------------------------------------------------

#[test]
fn empty_data_is_not_reported_as_a_number() {
    let (root, data, ckpt) = setup("empty-data");
    let eval = |extra: &[&str]| {
        let mut a = vec![
            "eval",
            "--checkpoint",
            s(&ckpt),
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            s(&data),
            "--attacks",
            "fgsm",
            "--no-sanity",
        ];
        a.extend_from_slice(extra);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let args = eval(&["--n-examples", "0"]);
    refused(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        "--n-examples",
    );
    for flag in ["--train-limit", "--test-limit", "--monitor-examples"] {
        refused(
            &[
                "train",
                "--method",
                "sat",
                "--dataset",
                "fashion-mnist",
                "--data-dir",
                s(&data),
                flag,
                "0",
                "--out",
                s(&root.join("run")),
            ],
            flag,
        );
    }
    // Shards of 3 examples in 4 pieces: one is empty, and the merge is the unsharded result.
    let mut shards = Vec::new();
    for k in 0..4 {
        let json = root.join(format!("shard-{k}.json"));
        let shard = format!("{k}/4");
        let args = eval(&["--n-examples", "3", "--shard", &shard, "--json", s(&json)]);
        let (code, out, err) = rslad(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(code, 0, "{err}");
        let r: EvalResults =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        if r.example_ids.is_empty() {
            assert!(err.contains("no examples"), "{err}");
            assert!(!out.contains("0.00"), "{out}");
        }
        shards.push(json);
    }
    let whole = root.join("whole.json");
    let args = eval(&["--n-examples", "3", "--json", s(&whole)]);
    let (code, _, err) = rslad(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{err}");
    let merged = root.join("merged.json");
    let mut args = vec!["report".to_string()];
    args.extend(shards.iter().map(|p| p.display().to_string()));
    args.extend(["--out".to_string(), merged.display().to_string()]);
    let (code, _, err) = rslad(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{err}");
    let read = |p: &Path| -> EvalResults {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let (m, w) = (read(&merged), read(&whole));
    assert_eq!(m.example_ids, w.example_ids);
    assert_eq!(m.clean, w.clean);
    assert_eq!(m.attacks[0].robust, w.attacks[0].robust);
    // An empty data file is refused.
    let empty = root.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    fake_fashion(&empty, 0, 0, false);
    let err = data::load(DatasetKind::FashionMnist, Some(&empty), Split::Test, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no images"), "{err}");
}

// ---- 10. temporary files --------------------------------------------------------------------

#[test]
fn atomic_writes_never_follow_a_planted_link() {
    let dir = temp_dir("planted-link");
    let victim = dir.join("victim.txt");
    std::fs::write(&victim, "keep me").unwrap();
    let target = dir.join("state.json");
    let planted = dir.join(format!(".state.json.{}.tmp", std::process::id()));
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    rslad::io::write_atomic(&target, b"new").unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
    assert!(!std::fs::symlink_metadata(&target)
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn resume_removes_temporary_files_left_by_a_kill() {
    let (root, data, _) = setup("stale-tmp");
    let run = root.join("run");
    let args = |epochs: &'static str| {
        vec![
            "train".to_string(),
            "--dataset".into(),
            "fashion-mnist".into(),
            "--data-dir".into(),
            data.display().to_string(),
            "--train-limit".into(),
            "16".into(),
            "--test-limit".into(),
            "8".into(),
            "--batch-size".into(),
            "16".into(),
            "--epochs".into(),
            epochs.into(),
            "--out".into(),
            run.display().to_string(),
        ]
    };
    let a = args("1");
    let (code, _, err) = rslad(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{err}");
    let stale = [
        ".state.json.4242.tmp",
        ".best.safetensors.4242.tmp",
        ".metrics.jsonl.4242.tmp",
        "ckpt/.epoch-0002.safetensors.4242.tmp",
    ];
    for name in stale {
        std::fs::write(run.join(name), "half").unwrap();
    }
    // A user's own file is left alone.
    std::fs::write(run.join("notes.txt"), "mine").unwrap();
    let (code, _, err) = rslad(&["train", "--resume", s(&run), "--epochs", "2"]);
    assert_eq!(code, 0, "{err}");
    for name in stale {
        assert!(!run.join(name).exists(), "{name} left behind");
    }
    assert!(run.join("notes.txt").exists());
}

// ---- 11. a transfer surrogate that outputs NaN ----------------------------------------------

#[test]
fn a_nan_surrogate_is_flagged() {
    let (root, data, ckpt) = setup("nan-surrogate");
    let surrogate = root.join("surrogate.safetensors");
    save_small(&surrogate);
    // Finite weights (a damaged file with NaN ones is refused at load) whose logits overflow
    // to NaN.
    rewrite_checkpoint(&surrogate, |_| true, f32::MAX);
    let device = device();
    let model = load_model(&ckpt, &device, None).unwrap();
    let test = data::load(DatasetKind::FashionMnist, Some(&data), Split::Test, None).unwrap();
    let ctx = AttackContext {
        eps: 0.1,
        seed: 0,
        device: &device,
        target: &model.spec,
    };
    let list = attacks::parse_list(&format!("transfer-pgd:{}", surrogate.display()), &ctx).unwrap();
    let cfg = EvalConfig {
        eps: 0.1,
        batch_size: 8,
        seed: 0,
        sanity_checks: false,
    };
    let r = eval::evaluate(&model, test.clone(), 0, &list, &cfg, &device, &mut |_| {});
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("Transfer-PGD") && w.contains("NaN")),
        "{:?}",
        r.warnings
    );
    // Whatever it crafted is judged as points of the threat model.
    assert!(r.attacks[0].robust_accuracy <= r.clean_accuracy);
    // A model whose logits are NaN has no prediction: 0% correct, not argmax's pick.
    let poisoned = load_model(&surrogate, &device, None).unwrap();
    let fgsm = attacks::parse_list("fgsm", &ctx).unwrap();
    let r = eval::evaluate(
        &poisoned,
        test.clone(),
        0,
        &fgsm,
        &cfg,
        &device,
        &mut |_| {},
    );
    assert_eq!(r.clean_accuracy, 0.0);
    assert_eq!(r.attacks[0].robust_accuracy, 0.0);
    assert!(
        r.warnings.iter().any(|w| w.contains("NaN")),
        "{:?}",
        r.warnings
    );
    // A sound surrogate raises no such warning.
    let sound = root.join("sound.safetensors");
    save_small(&sound);
    let list = attacks::parse_list(&format!("transfer-pgd:{}", sound.display()), &ctx).unwrap();
    let r = eval::evaluate(&model, test, 0, &list, &cfg, &device, &mut |_| {});
    assert!(
        !r.warnings.iter().any(|w| w.contains("NaN")),
        "{:?}",
        r.warnings
    );
}

// ---- misleading messages --------------------------------------------------------------------

#[test]
fn messages_say_what_is_wrong() {
    let (root, data, ckpt) = setup("messages");
    // A directory where a checkpoint should be.
    let dir = root.join("adir.safetensors");
    std::fs::create_dir_all(&dir).unwrap();
    let err = refused(
        &[
            "eval",
            "--checkpoint",
            s(&dir),
            "--dataset",
            "fashion-mnist",
        ],
        "directory",
    );
    assert!(!err.contains("8-byte"), "{err}");
    // A directory where an IDX file should be.
    let bad = root.join("dirdata");
    std::fs::create_dir_all(bad.join("t10k-images-idx3-ubyte.gz")).unwrap();
    let err = data::load(DatasetKind::FashionMnist, Some(&bad), Split::Test, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("directory"), "{err}");
    assert!(!err.contains("not found"), "{err}");
    // An IDX header whose size overflows is named as such, not as a wrapped number.
    let wrap = root.join("wrap");
    std::fs::create_dir_all(&wrap).unwrap();
    fake_fashion(&wrap, 4, 4, false);
    write_idx(
        &wrap.join("t10k-labels-idx1-ubyte"),
        0x801,
        &[4],
        &[0, 1, 2, 3],
        false,
    );
    let mut bytes = 0x803u32.to_be_bytes().to_vec();
    for d in [u32::MAX, 28, 28] {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    std::fs::write(wrap.join("t10k-images-idx3-ubyte"), bytes).unwrap();
    let err = data::load(DatasetKind::FashionMnist, Some(&wrap), Split::Test, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("4294967295"), "{err}");
    // A negative dimension is shown as written.
    let neg = root.join("neg.safetensors");
    write_raw_checkpoint(
        &neg,
        r#"{"name":"cnn-small","input":{"channels":1,"height":28,"width":28},"num_classes":10}"#,
        "[-3]",
        16,
    );
    let err = load_model(&neg, &device(), None).unwrap_err().to_string();
    assert!(err.contains("-3"), "{err}");
    // An OS error is printed once.
    let under_file = ckpt.join("x.safetensors");
    let err = refused(
        &[
            "eval",
            "--checkpoint",
            s(&under_file),
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            s(&data),
        ],
        "Not a directory",
    );
    assert_eq!(err.matches("Not a directory").count(), 1, "{err}");
    // A missing best checkpoint is named by its own path.
    let run = root.join("run");
    let (code, _, err) = rslad(&[
        "train",
        "--dataset",
        "fashion-mnist",
        "--data-dir",
        s(&data),
        "--train-limit",
        "16",
        "--test-limit",
        "8",
        "--batch-size",
        "16",
        "--epochs",
        "1",
        "--out",
        s(&run),
    ]);
    assert_eq!(code, 0, "{err}");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("state.json")).unwrap()).unwrap();
    let best = state["best"]["file"].as_str().unwrap().to_string();
    std::fs::remove_file(run.join(&best)).unwrap();
    let err = refused(&["train", "--resume", s(&run), "--epochs", "2"], &best);
    assert!(!err.contains("best.safetensors:"), "{err}");
}

// ---- found by trying more bad inputs --------------------------------------------------------

/// `train --config RUN/config.toml` repeats the run: the schedule follows a new epoch count,
/// and the teacher must be the one the run learned from.
#[test]
fn a_run_repeated_from_its_config_is_the_same_run() {
    let (root, data, ckpt) = setup("repeat-run");
    let run = trained_run(&root, &data);
    let config = run.join("config.toml");
    let again = root.join("again");
    let (code, _, err) = rslad(&[
        "train",
        "--config",
        s(&config),
        "--out",
        s(&again),
        "--epochs",
        "2",
    ]);
    assert_eq!(code, 0, "{err}");
    let recorded = std::fs::read_to_string(again.join("config.toml")).unwrap();
    assert!(recorded.contains("epochs = 2"), "{recorded}");
    assert!(recorded.contains("milestones = [1, 2, 2]"), "{recorded}");
    // A distillation run whose teacher file holds other weights since.
    let teacher = root.join("teacher.safetensors");
    std::fs::copy(&ckpt, &teacher).unwrap();
    let distilled = root.join("distilled");
    let mut args = tiny_train(&data, &distilled);
    args.extend([
        "--method",
        "rslad",
        "--teacher",
        s(&teacher),
        "--attack-steps",
        "1",
    ]);
    let (code, _, err) = rslad(&args);
    assert_eq!(code, 0, "{err}");
    rewrite_checkpoint(&teacher, |_| true, 0.5);
    let config = distilled.join("config.toml");
    let out = root.join("distilled-again");
    refused(
        &["train", "--config", s(&config), "--out", s(&out)],
        "other weights than the teacher the run",
    );
    assert!(!out.exists());
}

/// A run trained past the epochs asked for is not taken for the shorter run (an experiment
/// cell extended by hand would otherwise be evaluated and recorded as the grid's).
#[test]
fn a_longer_run_is_never_taken_for_a_shorter_one() {
    let (root, data, _) = setup("longer-run");
    let run = root.join("run");
    // One schedule for both (the default one follows the epoch count).
    let mut one = tiny_train(&data, &run);
    one.extend(["--milestones", "5"]);
    let mut two = one.clone();
    let at = two.iter().position(|a| *a == "--epochs").unwrap();
    two[at + 1] = "2";
    let (code, _, err) = rslad(&two);
    assert_eq!(code, 0, "{err}");
    let before = std::fs::read(run.join("best.safetensors")).unwrap();
    refused(&one, "has already trained 2 epochs");
    assert_eq!(std::fs::read(run.join("best.safetensors")).unwrap(), before);
}

/// A one-epoch natural run on the tiny data: its run directory.
fn trained_run(root: &Path, data: &Path) -> PathBuf {
    let run = root.join("run");
    let (code, _, err) = rslad(&tiny_train(data, &run));
    assert_eq!(code, 0, "{err}");
    run
}

#[test]
fn a_damaged_run_directory_is_refused_and_nothing_is_lost() {
    let (root, data, _) = setup("damaged-run");
    let run = trained_run(&root, &data);
    let state_path = run.join("state.json");
    let good = std::fs::read_to_string(&state_path).unwrap();
    let state: serde_json::Value = serde_json::from_str(&good).unwrap();
    let weights = state["weights"].as_str().unwrap().to_string();
    let optimizer = state["optimizer"].as_str().unwrap().to_string();
    let resume = ["train", "--resume", s(&run), "--epochs", "2"];
    // Counters that disagree with the history.
    let mut bad = state.clone();
    bad["epochs_done"] = 99.into();
    bad["next_epoch"] = 99.into();
    std::fs::write(&state_path, bad.to_string()).unwrap();
    refused(&resume, "epochs_done");
    // A state naming a missing file: refused before anything is cleaned up.
    let mut bad = state.clone();
    bad["weights"] = "ckpt/epoch-0009.safetensors".into();
    std::fs::write(&state_path, bad.to_string()).unwrap();
    refused(&resume, "epoch-0009");
    assert!(
        run.join(&weights).is_file(),
        "the real checkpoint was removed"
    );
    assert!(run.join(&optimizer).is_file());
    // Another file in the optimizer state's place.
    std::fs::write(&state_path, &good).unwrap();
    let saved = std::fs::read(run.join(&optimizer)).unwrap();
    std::fs::copy(run.join(&weights), run.join(&optimizer)).unwrap();
    refused(&resume, "optimizer state");
    std::fs::write(run.join(&optimizer), saved).unwrap();
    let (code, _, err) = rslad(&resume);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn models_too_large_to_build_are_refused() {
    let (root, data, _) = setup("huge-model");
    // The second: a width whose parameter count would wrap round is too large as well.
    for model in ["wrn-1000-1000", "wrn-10-18446744073709551615"] {
        let run = root.join("run");
        let err = refused(
            &[
                "train",
                "--dataset",
                "fashion-mnist",
                "--data-dir",
                s(&data),
                "--model",
                model,
                "--out",
                s(&run),
            ],
            "parameters",
        );
        assert!(err.contains("--model"), "{err}");
    }
    refused(
        &[
            "import",
            "--from",
            "/nonexistent.pt",
            "--model",
            "wrn-1000-1000",
            "--out",
            s(&root.join("x.safetensors")),
        ],
        "parameters",
    );
}

#[test]
fn experiment_cells_are_plain_and_distinct() {
    let (root, data, ckpt) = setup("experiment-cells");
    let write = |body: &str| {
        let p = root.join("exp.toml");
        std::fs::write(
            &p,
            format!(
                "dataset = 'fashion-mnist'\ndata_dir = '{}'\n{body}",
                data.display()
            ),
        )
        .unwrap();
        p
    };
    let p = write(&format!(
        "seeds = [1, 1]\n[teacher]\nmodel = 'cnn-small'\ncheckpoint = '{}'\n\
         [[student]]\nmodel = 'cnn-small'\nmethods = ['sat']\n",
        ckpt.display()
    ));
    refused(
        &["experiment", "--config", s(&p), "--list-cells"],
        "listed twice",
    );
    // A given checkpoint is not trained, so its model name is never resolved as a run's:
    // it must still be a model, not a path.
    let p = write(&format!(
        "[teacher]\nmodel = '../../escape'\ncheckpoint = '{}'\n",
        ckpt.display()
    ));
    refused(
        &[
            "experiment",
            "--config",
            s(&p),
            "--out",
            s(&root.join("exp")),
        ],
        "escape",
    );
    assert!(!root.join("escape-sat").exists());
}

#[test]
fn report_names_files_it_cannot_read() {
    let root = temp_dir("report-unreadable");
    let cell = root.join("cells").join("x");
    std::fs::create_dir_all(&cell).unwrap();
    std::fs::write(cell.join("cell.json"), "{").unwrap();
    refused(&["report", s(&root)], "cell.json");
    // Shards of different evaluations say what differs.
    let a = shard(0..4, "1111", "1100", &["1110", "1100"]);
    let mut b = shard(4..8, "1111", "1100", &["1110", "1100"]);
    b.eps = 0.2;
    let err = rslad::eval::merge_shards(vec![a, b])
        .unwrap_err()
        .to_string();
    assert!(err.contains("eps (0.1 vs 0.2)"), "{err}");
}

/// Cells a report cannot trust are left out with a warning naming the file: a model name that
/// would put a plot outside the output folder, outcomes of the wrong length or not 0/1, and a
/// recorded accuracy its outcomes do not give.
#[test]
fn report_leaves_out_what_it_cannot_trust() {
    let root = temp_dir("report-untrusted");
    let put = |name: &str, model: &str, r: &EvalResults| {
        let dir = root.join("cells").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let cell = serde_json::json!({
            "cell": {"index": 0, "name": name, "role": "student", "model": model,
                     "method": name, "seed": 0, "checkpoint": null, "train": {}},
            "dataset": "fashion-mnist", "eps": 0.1, "finished": true
        });
        std::fs::write(dir.join("cell.json"), cell.to_string()).unwrap();
        std::fs::write(
            dir.join("eval-best.json"),
            serde_json::to_string(r).unwrap(),
        )
        .unwrap();
        std::fs::write(dir.join("metrics.jsonl"), "").unwrap();
    };
    let good = |clean: &str, aa: &str| {
        let mut r = shard(0..4, clean, aa, &[]);
        r.clean_accuracy = clean.matches('1').count() as f64 / 4.0;
        r.attacks[0].robust_accuracy = aa.matches('1').count() as f64 / 4.0;
        r
    };
    put("sat", "cnn-small", &good("1110", "1100"));
    put("escape", "/../../escaped", &good("1110", "1100"));
    put("short", "cnn-small", &good("111", "1100"));
    put("letters", "cnn-small", &good("11x0", "1100"));
    let mut edited = good("1110", "1100");
    edited.attacks[0].robust_accuracy = 0.9;
    put("edited", "cnn-small", &edited);
    let rep = rslad::report::collect(std::slice::from_ref(&root)).unwrap();
    let methods: Vec<&str> = rep.white_box.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(methods, ["sat"], "{:?}", rep.warnings);
    for needle in [
        "the model '/../../escaped' is not a model name",
        "clean has 3 outcomes for 4 example ids",
        "the outcome 'x'",
        "AA records accuracy 0.9, its outcomes give 0.5",
    ] {
        assert!(
            rep.warnings.iter().any(|w| w.contains(needle)),
            "{needle}: {:?}",
            rep.warnings
        );
    }
    let out = root.join("report");
    rslad::report::write(&rep, &out).unwrap();
    assert!(!root.join("escaped.svg").exists() && !root.join("curves-").exists());
    // A report is written again over a report, never over a user's file of the same name; an
    // earlier report's plot of another model goes.
    std::fs::write(out.join("curves-gone.svg"), "<svg/>").unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    rslad::report::write(&rep, &out).unwrap();
    assert!(!out.join("curves-gone.svg").exists() && out.join("notes.txt").exists());
    let mine = root.join("mine");
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::write(mine.join("results.csv"), "my own numbers\n").unwrap();
    let e = rslad::report::write(&rep, &mine).unwrap_err().to_string();
    assert!(e.contains("results.csv is already there"), "{e}");
    assert_eq!(
        std::fs::read_to_string(mine.join("results.csv")).unwrap(),
        "my own numbers\n"
    );
    assert!(!mine.join("report.md").exists());
}

/// The seeds of a row are one setup: the same method from two experiment folders trained with
/// other settings is refused, never averaged as if the difference were seed noise.
#[test]
fn report_never_averages_two_setups() {
    let root = temp_dir("report-setups");
    let put = |dir: &Path, seed: u64, train: serde_json::Value| {
        let name = format!("cnn-small-sat-s{seed}");
        let cell = dir.join("cells").join(&name);
        std::fs::create_dir_all(&cell).unwrap();
        let record = serde_json::json!({
            "cell": {"index": 2, "name": name, "role": "student", "model": "cnn-small",
                     "method": "sat", "seed": seed, "checkpoint": null, "train": train},
            "dataset": "fashion-mnist", "eps": 0.1, "finished": true
        });
        std::fs::write(cell.join("cell.json"), record.to_string()).unwrap();
        let mut r = shard(0..4, "1110", "1100", &[]);
        r.clean_accuracy = 0.75;
        r.attacks[0].robust_accuracy = 0.5;
        std::fs::write(
            cell.join("eval-best.json"),
            serde_json::to_string(&r).unwrap(),
        )
        .unwrap();
        std::fs::write(cell.join("metrics.jsonl"), "").unwrap();
    };
    let (a, b) = (root.join("a"), root.join("b"));
    put(
        &a,
        0,
        serde_json::json!({"lr": 0.05, "seed": 0, "data_dir": "/x"}),
    );
    put(
        &b,
        1,
        serde_json::json!({"lr": 0.05, "seed": 1, "data_dir": "/y"}),
    );
    let rep = rslad::report::collect(&[a.clone(), b.clone()]).unwrap();
    assert_eq!(rep.white_box[0].seeds, [0, 1], "{:?}", rep.warnings);
    put(
        &b,
        1,
        serde_json::json!({"lr": 0.5, "seed": 1, "data_dir": "/y"}),
    );
    let e = rslad::report::collect(&[a.clone(), b.clone()])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("trained with other settings (train.lr: 0.05 -> 0.5)"),
        "{e}"
    );
    // The same seed in both, of two setups: refused too, not one of them dropped.
    std::fs::remove_dir_all(b.join("cells")).unwrap();
    put(
        &b,
        0,
        serde_json::json!({"lr": 0.5, "seed": 0, "data_dir": "/y"}),
    );
    let e = rslad::report::collect(&[a, b]).unwrap_err().to_string();
    assert!(e.contains("train.lr: 0.05 -> 0.5"), "{e}");
}

#[test]
fn more_misleading_messages() {
    let (root, data, ckpt) = setup("more-messages");
    // A file that is neither a zip archive nor a pickle is not called an unsafe pickle.
    let junk = root.join("passwd.pt");
    std::fs::write(&junk, "root:x:0:0:root:/root:/bin/bash\n").unwrap();
    let err = refused(
        &[
            "import",
            "--from",
            s(&junk),
            "--model",
            "cnn-small",
            "--dataset",
            "fashion-mnist",
            "--out",
            s(&root.join("x.safetensors")),
        ],
        "not a PyTorch checkpoint",
    );
    assert!(!err.contains("unsafe"), "{err}");
    // --json naming a directory fails before the evaluation, not after it.
    let err = refused(
        &[
            "eval",
            "--checkpoint",
            s(&ckpt),
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            s(&data),
            "--json",
            s(&data),
        ],
        "--json",
    );
    assert!(!err.contains("evaluating"), "{err}");
    // A teacher's or surrogate's error names the file once.
    let missing = root.join("missing.safetensors");
    let err = refused(
        &[
            "eval",
            "--checkpoint",
            s(&ckpt),
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            s(&data),
            "--attacks",
            &format!("transfer:{}", missing.display()),
        ],
        "missing.safetensors",
    );
    assert_eq!(err.matches("missing.safetensors").count(), 1, "{err}");
    // A config.toml rslad did not write is never replaced by a run's.
    let mine = root.join("mine");
    std::fs::create_dir_all(&mine).unwrap();
    let text = "# my settings\nepochs = 1\n";
    std::fs::write(mine.join("config.toml"), text).unwrap();
    refused(
        &tiny_train(&data, &mine),
        "not a run configuration rslad wrote",
    );
    assert_eq!(
        std::fs::read_to_string(mine.join("config.toml")).unwrap(),
        text
    );
    // Settings that do less than they say are named in a note, and the run goes on.
    let run = root.join("noted");
    let mut args = tiny_train(&data, &run);
    assert_eq!(args[5], "--train-limit");
    args[6] = "100";
    args.extend(["--method", "natural", "--eps", "0.1", "--milestones", "3"]);
    args.extend(["--teacher-model", "cnn-large"]);
    let (code, _, err) = rslad(&args);
    assert_eq!(code, 0, "{err}");
    for note in [
        "method natural does not read --teacher-model, --eps: they change nothing",
        "train_limit 100 is more than the 16 training images there",
        "milestones [3] are at or after the last epoch",
    ] {
        assert!(err.contains(note), "{note}: {err}");
    }
}

#[test]
fn bench_and_iad_settings_are_validated() {
    let (root, data, ckpt) = setup("bench-iad");
    let bench = |extra: &[&str], needle: &str| {
        let mut a = vec!["bench", "--model", "cnn-small", "--no-pytorch"];
        a.extend_from_slice(extra);
        refused(&a, needle);
    };
    bench(&["--batch-size", "0"], "--batch-size");
    bench(&["--reps", "0"], "--reps");
    bench(&["--json", s(&data)], "--json");
    // Counts no benchmark needs, refused before the first timed row.
    bench(&["--reps", "1000000000000"], "at most 10000");
    bench(&["--batch-size", "1000000000"], "at most 4096");
    bench(&["--aa-steps", "0"], "--aa-steps");
    bench(&["--aa-only", "--aa-images", "0"], "would time nothing");
    bench(
        &["--eval-checkpoint", s(&ckpt), "--aa-images", "0"],
        "--aa-images 0 turns off",
    );
    bench(&["--model", "cnn-small,foo"], "foo");
    let steps = root.join("steps");
    let mut args = tiny_train(&data, &steps);
    args.extend(["--method", "sat", "--attack-steps", "1000000000000"]);
    refused(&args, "attack_steps");
    refused(
        &[
            "train",
            "--method",
            "iad",
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            s(&data),
            "--teacher",
            s(&ckpt),
            "--epochs",
            "2",
            "--iad-begin",
            "5",
            "--out",
            s(&root.join("run")),
        ],
        "--iad-begin",
    );
}

// ---- 12. a second probe: damaged weights, diverged epochs, lost states, locks, outputs -------

#[test]
fn damaged_weights_are_refused_at_load() {
    let (root, data, ckpt) = setup("damaged-weights");
    let device = device();
    let fgsm = ["--attacks", "fgsm", "--n-examples", "8"];
    for (name, pick, value, needle) in [
        ("one-nan", "linear.weight", f32::NAN, "NaN"),
        ("inf", "weight", f32::INFINITY, "infinity"),
        ("negative-var", "running_var", -1.0, "negative variance"),
    ] {
        let bad = root.join(format!("{name}.safetensors"));
        std::fs::copy(&ckpt, &bad).unwrap();
        rewrite_checkpoint(&bad, |n| n.ends_with(pick), value);
        let e = load_model(&bad, &device, None).unwrap_err().to_string();
        assert!(e.contains(needle) && e.contains(name), "{e}");
        refused(&eval_args(&bad, &data, &fgsm), needle);
    }
    // Huge but finite weights load: their NaN logits are the evaluation's to flag.
    let huge = root.join("huge.safetensors");
    std::fs::copy(&ckpt, &huge).unwrap();
    rewrite_checkpoint(&huge, |n| n.ends_with("weight"), 1e30);
    assert!(load_model(&huge, &device, None).is_ok());
    // The sound checkpoint evaluates.
    let (code, _, err) = rslad(&eval_args(&ckpt, &data, &fgsm));
    assert_eq!(code, 0, "{err}");
}

#[test]
fn an_epoch_whose_logits_overflow_is_not_committed() {
    let (root, data, _) = setup("overflow-logits");
    let out = root.join("run");
    // One step at lr 1e30 leaves finite weights of about 1e29 whose logits are not finite.
    let mut args = tiny_train(&data, &out);
    args.extend(["--lr", "1e30"]);
    let err = refused(&args, "diverged");
    assert!(err.contains("epoch 1"), "{err}");
    assert!(!out.join("state.json").exists());
    assert!(!out.join("best.safetensors").exists());
}

#[test]
fn run_directories_are_never_trained_over() {
    let (root, data, _) = setup("run-dirs");
    let out = trained_run(&root, &data);
    let best = std::fs::read(out.join("best.safetensors")).unwrap();
    // Its state.json lost: neither a resume nor a new run in the same place starts over.
    std::fs::rename(out.join("state.json"), root.join("state.json")).unwrap();
    refused(&["train", "--resume", s(&out)], "state.json is missing");
    refused(&tiny_train(&data, &out), "state.json is missing");
    assert_eq!(std::fs::read(out.join("best.safetensors")).unwrap(), best);
    std::fs::rename(root.join("state.json"), out.join("state.json")).unwrap();
    // Another process working in the directory (its lock held): refused, nothing touched.
    let lock = rslad::io::try_lock(&out.join("run.lock")).unwrap().unwrap();
    refused(&["train", "--resume", s(&out), "--epochs", "2"], "in use");
    drop(lock);
    let (code, _, err) = rslad(&["train", "--resume", s(&out), "--epochs", "2"]);
    assert_eq!(code, 0, "{err}");
    // No run directory, or a file in its place.
    refused(&tiny_train(&data, Path::new("")), "out is empty");
    let file = root.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    refused(&tiny_train(&data, &file), "is a file");
    // A teacher given to a method that learns from none.
    let natural = root.join("natural");
    let mut args = tiny_train(&data, &natural);
    args.extend(["--teacher", s(&out)]);
    refused(&args, "learns from no teacher");
}

#[test]
fn outputs_never_replace_their_inputs() {
    let (root, data, ckpt) = setup("outputs");
    let before = std::fs::read(&ckpt).unwrap();
    let run = |json: &Path, needle: &str| {
        let extra = ["--attacks", "none", "--n-examples", "4", "--json", s(json)];
        refused(&eval_args(&ckpt, &data, &extra), needle);
    };
    run(&ckpt, "is an input of this command");
    let labels = data.join("t10k-labels-idx1-ubyte");
    let labels_before = std::fs::read(&labels).unwrap();
    run(&labels, "exists and is not an rslad results file");
    assert_eq!(std::fs::read(&labels).unwrap(), labels_before);
    // A benchmark table never replaces an evaluation's results.
    let results = root.join("results.json");
    let extra = [
        "--attacks",
        "none",
        "--n-examples",
        "4",
        "--json",
        s(&results),
    ];
    let (code, _, err) = rslad(&eval_args(&ckpt, &data, &extra));
    assert_eq!(code, 0, "{err}");
    refused(
        &["bench", "--no-pytorch", "--json", s(&results)],
        "not an rslad bench file",
    );
    // Nor a run's state, although it is JSON.
    let state = root.join("state.json");
    std::fs::write(&state, br#"{"epochs_done": 3}"#).unwrap();
    run(&state, "exists and is not an rslad results file");
    // An earlier results file is replaced, as asked.
    let json = root.join("r.json");
    let extra = ["--attacks", "none", "--n-examples", "4", "--json", s(&json)];
    for _ in 0..2 {
        let (code, _, err) = rslad(&eval_args(&ckpt, &data, &extra));
        assert_eq!(code, 0, "{err}");
    }
    assert!(std::fs::read_to_string(&json)
        .unwrap()
        .contains("example_ids"));
    refused(
        &["export", "--checkpoint", s(&ckpt), "--out", s(&ckpt)],
        "is an input of this command",
    );
    // Also when named through a folder that does not exist yet: `new/..` is no folder.
    let sneaky = ckpt
        .parent()
        .unwrap()
        .join("not-yet/../")
        .join(ckpt.file_name().unwrap());
    refused(
        &["export", "--checkpoint", s(&ckpt), "--out", s(&sneaky)],
        "is an input of this command",
    );
    run(&sneaky, "is an input of this command");
    assert!(!ckpt.parent().unwrap().join("not-yet").exists());
    // A training run's checkpoint is the run's: an import or export never replaces it.
    let run_dir = trained_run(&root, &data);
    let kept = run_dir.join("best.safetensors");
    refused(
        &["export", "--checkpoint", s(&ckpt), "--out", s(&kept)],
        "is a checkpoint of the training run",
    );
    // Nor one of its epoch checkpoints, nor a new file there.
    let epoch = run_dir.join("ckpt/epoch-0001.safetensors");
    refused(
        &["export", "--checkpoint", s(&ckpt), "--out", s(&epoch)],
        "is a checkpoint of the training run",
    );
    // A new file beside its checkpoints (an export next to them) is the user's.
    let next_to = run_dir.join("exported.safetensors");
    for _ in 0..2 {
        let (code, _, err) = rslad(&["export", "--checkpoint", s(&ckpt), "--out", s(&next_to)]);
        assert_eq!(code, 0, "{err}");
    }
    // Beside the run, named through its folder and `..`, is outside it.
    let beside = run_dir.join("..").join("beside.safetensors");
    let (code, _, err) = rslad(&["export", "--checkpoint", s(&ckpt), "--out", s(&beside)]);
    assert_eq!(code, 0, "{err}");
    // A lock file is empty, but replacing it would let a second process in.
    let lock = run_dir.join("run.lock");
    std::fs::write(&lock, "").unwrap();
    run(&lock, "is a lock file");
    // The torch format is safetensors: never under a torch.save name, and a torch.save file
    // under a safetensors name is said to be one.
    refused(
        &[
            "export",
            "--checkpoint",
            s(&ckpt),
            "--out",
            s(&root.join("w.pt")),
        ],
        "name it .safetensors",
    );
    let zip = root.join("zip.safetensors");
    std::fs::write(&zip, b"PK\x03\x04 the rest of a torch.save archive").unwrap();
    let out = root.join("z.safetensors");
    refused(
        &["export", "--checkpoint", s(&zip), "--out", s(&out)],
        "it is a PyTorch file",
    );
    let import_with = |out: &Path, extra: &[&str], needle: &str| {
        let mut args = vec![
            "import",
            "--from",
            s(&ckpt),
            "--model",
            "cnn-small",
            "--dataset",
            "fashion-mnist",
            "--out",
            s(out),
        ];
        args.extend_from_slice(extra);
        refused(&args, needle)
    };
    let import = |out: &Path, needle: &str| import_with(out, &[], needle);
    import(&ckpt, "is an input of this command");
    let verified = root.join("v.safetensors");
    import_with(&verified, &["--verify-examples", "5"], "give that too");
    import(&labels, "exists and is not a safetensors file");
    assert_eq!(std::fs::read(&labels).unwrap(), labels_before);
    // An rslad checkpoint needs no import: said so, not listed as 17 unexpected keys.
    let other = root.join("other.safetensors");
    import(&other, "already an rslad checkpoint");
    assert!(!other.exists());
    assert_eq!(std::fs::read(&ckpt).unwrap(), before);
}

#[test]
fn shards_must_cover_the_test_set() {
    let (root, data, ckpt) = setup("shard-gaps");
    let shard = |data: &Path, k: &str, name: &str| -> PathBuf {
        let json = root.join(format!("shard-{name}.json"));
        let extra = [
            "--attacks",
            "fgsm",
            "--n-examples",
            "8",
            "--batch-size",
            "4",
            "--shard",
            k,
            "--json",
            s(&json),
        ];
        let (code, _, err) = rslad(&eval_args(&ckpt, data, &extra));
        assert_eq!(code, 0, "{err}");
        json
    };
    let (a, b, c) = (
        shard(&data, "0/3", "a"),
        shard(&data, "1/3", "b"),
        shard(&data, "2/3", "c"),
    );
    // A shard of other test images (a data folder replaced between array jobs) never merges.
    let other = root.join("other-data");
    std::fs::create_dir_all(&other).unwrap();
    fake_fashion(&other, 20, 8, false);
    let b_other = shard(&other, "1/3", "b-other");
    refused(&["report", s(&a), s(&b_other), s(&c)], "test images");
    let merged = root.join("merged.json");
    let e = refused(
        &["report", s(&a), s(&c), "--out", s(&merged)],
        "shards missing",
    );
    assert!(e.contains("examples 2..=4"), "{e}");
    refused(&["report", s(&a), "--out", s(&merged)], "examples 2..=7");
    assert!(!merged.exists());
    refused(
        &["report", s(&a), s(&b), s(&c), "--out", s(&a)],
        "is an input of this command",
    );
    let (code, _, err) = rslad(&["report", s(&a), s(&b), s(&c), "--out", s(&merged)]);
    assert_eq!(code, 0, "{err}");
    let r: rslad::eval::EvalResults =
        serde_json::from_str(&std::fs::read_to_string(&merged).unwrap()).unwrap();
    assert_eq!(r.example_ids, (0..8).collect::<Vec<u64>>());
    assert_eq!(r.shard, None);
}

#[test]
fn attack_lists_name_each_column_once() {
    let e = attack_ctx_parse("pgd:steps=2:step=0.001,pgd:steps=2:step=0.1").unwrap_err();
    assert!(e.contains("both labelled PGD-2"), "{e}");
    for empty in ["", " , "] {
        let e = attack_ctx_parse(empty).unwrap_err();
        assert!(e.contains("names no attack"), "{e}");
    }
    assert_eq!(attack_ctx_parse("none"), Ok(0));
    assert_eq!(attack_ctx_parse("pgd:steps=2,pgd:steps=3"), Ok(2));
    // A surrogate whose path holds a comma is one item of the list.
    let dir = temp_dir("comma-path").join("a,b");
    std::fs::create_dir_all(&dir).unwrap();
    let surrogate = dir.join("s.safetensors");
    save_small(&surrogate);
    let list = format!("transfer-pgd:{},fgsm", surrogate.display());
    assert_eq!(attack_ctx_parse(&list), Ok(2), "{list}");
    // The same attack under two names runs once.
    for list in ["pgd,pgd:steps=20", "pgd:steps=10,pgd:steps=10:restarts=1"] {
        let e = attack_ctx_parse(list).unwrap_err();
        assert!(e.contains("listed twice"), "{list}: {e}");
    }
    let e = attack_ctx_parse("pgd:steps=99999999999999999999").unwrap_err();
    assert!(e.contains("too large"), "{e}");
}

#[test]
fn gzip_streams_are_read_whole_and_only_whole() {
    let dir = temp_dir("gzip-members");
    fake_fashion(&dir, 4, 6, false);
    let plain = std::fs::read(dir.join("t10k-images-idx3-ubyte")).unwrap();
    let gz = |bytes: &[u8]| {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    };
    let load = || data::load(DatasetKind::FashionMnist, Some(&dir), Split::Test, None);
    let want = load().unwrap();
    std::fs::remove_file(dir.join("t10k-images-idx3-ubyte")).unwrap();
    let path = dir.join("t10k-images-idx3-ubyte.gz");
    // Two members (pigz, bgzip, `cat a.gz b.gz`) are one stream.
    let mut two = gz(&plain[..1000]);
    two.extend(gz(&plain[1000..]));
    std::fs::write(&path, &two).unwrap();
    let got = load().unwrap();
    assert_eq!(got.len(), want.len());
    assert_eq!(got.images, want.images);
    // Data beyond what the header announces, in a member of its own or as garbage, is refused
    // as it is in a plain file.
    for (tail, needle) in [
        (gz(&[7u8; 784]), "more data after the header"),
        (b"garbage\n".to_vec(), "not gzip"),
    ] {
        let mut bytes = gz(&plain);
        bytes.extend(&tail);
        std::fs::write(&path, &bytes).unwrap();
        let e = load().unwrap_err().to_string();
        assert!(
            e.contains("t10k-images-idx3-ubyte.gz") && e.contains(needle),
            "{e}"
        );
        assert!(!e.contains("truncated"), "{e}");
    }
    // Zero bytes after the last member are padding (gzip ignores them); anything after them
    // is not.
    let mut padded = gz(&plain);
    padded.extend([0u8; 4096]);
    std::fs::write(&path, &padded).unwrap();
    assert_eq!(load().unwrap().images, want.images);
    padded.push(1);
    std::fs::write(&path, &padded).unwrap();
    let e = load().unwrap_err().to_string();
    assert!(e.contains("neither gzip nor zero padding"), "{e}");
}
