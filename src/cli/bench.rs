//! `rslad bench`: the speed table, with PyTorch beside it where `import torch` works.

use clap::Args;
use rslad::attacks::observe::Event;
use rslad::bench::{self, AaConfig, AaRun, BenchRow, MemoryProbe};
use std::path::PathBuf;
use std::process::Command;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Models (default: cnn-small and resnet18).
    #[arg(long, value_delimiter = ',')]
    model: Vec<String>,
    /// Batch size (default: 128 for cnn-*, 32 otherwise).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Timed repetitions per row (median reported).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Skip the PyTorch comparison.
    #[arg(long)]
    no_pytorch: bool,
    /// Also write the rows as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// AutoAttack rows on the first N Fashion-MNIST test images (0: no AA rows).
    #[arg(long, default_value_t = 100)]
    aa_images: usize,
    /// SAT steps of the quickly trained robust model the AA rows attack (cached under
    /// target/bench-cache; default 300 at batch 128 for cnn-*, 40 at batch 32 otherwise).
    #[arg(long)]
    aa_train_steps: Option<usize>,
    /// Shorten AA's APGD/FAB iterations (default: the standard 100).
    #[arg(long)]
    aa_steps: Option<usize>,
    /// Shorten AA's Square queries (default: the standard 5000).
    #[arg(long)]
    aa_queries: Option<usize>,
    /// Attack these weights in the AA rows instead of the quick model (a Fashion-MNIST
    /// checkpoint of the benchmarked model).
    #[arg(long)]
    eval_checkpoint: Option<PathBuf>,
    /// Only the AutoAttack rows.
    #[arg(long)]
    aa_only: bool,
    /// Folder with Fashion-MNIST (default: /usr/share/datasets/fashion-mnist).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// Reads the binary's counting allocator.
struct AllocProbe;

impl MemoryProbe for AllocProbe {
    fn reset_peak(&mut self) {
        crate::cli::alloc::reset_peak();
    }

    fn peak_above_reset(&self) -> Option<usize> {
        Some(crate::cli::alloc::peak_above_reset())
    }
}

fn pytorch(
    model: &str,
    batch: usize,
    reps: usize,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    // The checkout the binary was built in, else the current folder (a binary carried to
    // another machine with the checkout, as scripts/gpu-check.sh does).
    let built_in = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/pytorch_bench.py");
    let script = if built_in.exists() {
        built_in
    } else {
        PathBuf::from("bench/pytorch_bench.py")
    };
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    // On a GPU backend the reference runs on the GPU too (synchronised around each step).
    let torch_device = match rslad::backend::selected() {
        Ok(b) if b.is_gpu() => "cuda",
        _ => "cpu",
    };
    let out = Command::new("python3")
        .arg(&script)
        .args([
            "--model",
            model,
            "--batch",
            &batch.to_string(),
            "--threads",
            &threads.to_string(),
            "--reps",
            &reps.to_string(),
            "--device",
            torch_device,
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "PyTorch reference failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        return None;
    }
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()?
        .as_object()
        .cloned()
}

/// torchattacks' AutoAttack components on the same weights and images as `run`.
fn torchattacks_aa(run: &AaRun, threads: usize, steps: usize, queries: usize) -> Option<TorchAa> {
    let dir = std::env::temp_dir().join(format!("rslad-bench-aa-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let weights = dir.join("weights.safetensors");
    let model =
        rslad::models::load_model(&run.checkpoint, &rslad::backend::default_device(), None).ok()?;
    if let Err(e) = rslad::interop::export_torch(&model, &weights, None) {
        eprintln!("torchattacks reference skipped: export failed: {e}");
        return None;
    }
    let inputs = dir.join("inputs.bin");
    let mut raw: Vec<u8> = run.images.iter().flat_map(|v| v.to_le_bytes()).collect();
    raw.extend(run.labels.iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(&inputs, raw).ok()?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/torchattacks_aa.py");
    let [n, c, h, w] = run.shape;
    let out = Command::new("python3")
        .arg(&script)
        .args(["--model", &run.model, "--weights"])
        .arg(&weights)
        .arg("--inputs")
        .arg(&inputs)
        .args([
            "--n",
            &n.to_string(),
            "--shape",
            &format!("{c},{h},{w}"),
            "--eps",
            &run.eps.to_string(),
            "--threads",
            &threads.to_string(),
            "--steps",
            &steps.to_string(),
            "--queries",
            &queries.to_string(),
        ])
        .output()
        .ok();
    std::fs::remove_dir_all(&dir).ok();
    let out = out?;
    if !out.status.success() {
        eprintln!(
            "torchattacks reference failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

#[derive(serde::Deserialize)]
struct TorchAa {
    clean: usize,
    seconds: f64,
    components: Vec<TorchComponent>,
}

#[derive(serde::Deserialize)]
struct TorchComponent {
    name: String,
    attacked: usize,
    seconds: f64,
    robust: usize,
}

/// Fills the PyTorch columns of the AA rows: torchattacks' ms, and the ratio of images/s
/// (each side over the points it attacked, which can differ by a few).
fn merge_torchattacks(rows: &mut [BenchRow], reference: &TorchAa, images: usize) {
    for r in rows {
        let (attacked, seconds, robust) = if r.step == "AA" {
            let robust = reference.components.last().map(|c| c.robust);
            (images, reference.seconds, robust.unwrap_or(reference.clean))
        } else {
            let Some(c) = reference
                .components
                .iter()
                .find(|c| r.step == format!("AA {}", c.name))
            else {
                continue;
            };
            (c.attacked, c.seconds, c.robust)
        };
        r.pytorch_ms = Some(seconds * 1000.0);
        if attacked > 0 && r.batch > 0 {
            r.ratio = Some(r.images_per_second / (attacked as f64 / seconds.max(1e-9)));
        }
        let first = if r.step == "AA" {
            format!("clean {}", reference.clean)
        } else {
            attacked.to_string()
        };
        if let Some(note) = &mut r.note {
            note.push_str(&format!("; torchattacks {first} → {robust}"));
        }
    }
}

/// Prints a line per AA component as it starts and ends (with its seconds).
fn aa_observer() -> impl FnMut(&Event) {
    let mut t0 = std::time::Instant::now();
    move |e: &Event| match e {
        Event::Start {
            component,
            attacked,
        } => {
            t0 = std::time::Instant::now();
            eprintln!("  AA {component}: attacking {attacked} points...")
        }
        Event::End { component, robust } => eprintln!(
            "  AA {component}: {robust} still robust ({:.1} s)",
            t0.elapsed().as_secs_f64()
        ),
        Event::Step { .. } => {}
    }
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.batch_size == Some(0) {
        anyhow::bail!("--batch-size 0: the batch size must be at least 1");
    }
    if args.reps == 0 {
        anyhow::bail!("--reps 0 times nothing; give at least 1");
    }
    // Beyond these a row would run for days or allocate more than any machine holds.
    if args.reps > 10_000 {
        anyhow::bail!("--reps {}: at most 10000 (a typo?)", args.reps);
    }
    if let Some(b) = args.batch_size.filter(|&b| b > 4096) {
        anyhow::bail!("--batch-size {b}: at most 4096 (a typo?)");
    }
    if let Some(p) = &args.json {
        let inputs: Vec<&std::path::Path> =
            args.eval_checkpoint.iter().map(|c| c.as_path()).collect();
        super::output::check("--json", p, &inputs, super::output::Kind::BenchJson)?;
    }
    let device = rslad::backend::default_device();
    let models = if args.model.is_empty() {
        vec!["cnn-small".to_string(), "resnet18".to_string()]
    } else {
        args.model.clone()
    };
    // Everything a row could fail on is checked before the first (long) timed row.
    for m in &models {
        m.parse::<rslad::models::Arch>()?;
    }
    for (flag, value) in [
        ("--aa-steps", args.aa_steps),
        ("--aa-queries", args.aa_queries),
    ] {
        if value == Some(0) {
            anyhow::bail!("{flag} 0 would run no attack; give at least 1");
        }
    }
    if args.aa_images == 0 && args.aa_only {
        anyhow::bail!("--aa-only with --aa-images 0 would time nothing; give at least 1 image");
    }
    if args.aa_images == 0 && args.eval_checkpoint.is_some() {
        anyhow::bail!(
            "--eval-checkpoint is attacked in the AA rows, which --aa-images 0 turns off; give \
             at least 1 image"
        );
    }
    if let Some(p) = &args.eval_checkpoint {
        bench::check_aa_fit(p, &rslad::models::peek_spec(p)?)
            .map_err(|e| anyhow::anyhow!("--eval-checkpoint {e}"))?;
    }
    let torch = !args.no_pytorch
        && Command::new("python3")
            .args(["-c", "import torch"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
    eprintln!(
        "rslad {} on {}, {} threads; PyTorch reference: {}",
        env!("CARGO_PKG_VERSION"),
        rslad::backend::describe(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        match (torch, args.no_pytorch) {
            (true, _) => "yes",
            (false, true) => "no (--no-pytorch)",
            (false, false) => "no (python3 cannot import torch)",
        }
    );
    let torchattacks = torch
        && args.aa_images > 0
        && Command::new("python3")
            .args(["-c", "import torchattacks"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
    let mut all: Vec<BenchRow> = Vec::new();
    let mut aa_runs = Vec::new();
    for m in &models {
        let batch = args
            .batch_size
            .unwrap_or(if m.starts_with("cnn") { 128 } else { 32 });
        if !args.aa_only {
            eprintln!("benchmarking {m} at batch {batch}...");
            let mut rows = bench::run_model(m, batch, args.reps, &device, &mut AllocProbe)
                .map_err(anyhow::Error::msg)?;
            if torch {
                if let Some(reference) = pytorch(m, batch, args.reps) {
                    // The model's convolutions, as the reference found them, timed alone here.
                    let convs: Vec<bench::ConvShape> = reference
                        .get("_convs")
                        .and_then(|v| serde_json::from_value(v.clone()).ok())
                        .unwrap_or_default();
                    rows.extend(bench::conv_rows(
                        m,
                        &convs,
                        batch,
                        args.reps,
                        &device,
                        &mut AllocProbe,
                    ));
                    for r in &mut rows {
                        if let Some(ms) = reference.get(&r.step).and_then(|v| v.as_f64()) {
                            r.pytorch_ms = Some(ms);
                            r.ratio = Some(ms / r.median_ms);
                        }
                    }
                }
            }
            all.extend(rows);
        }
        if args.aa_images > 0 {
            let cnn = m.starts_with("cnn");
            let cfg = AaConfig {
                images: args.aa_images,
                train_steps: args.aa_train_steps.unwrap_or(if cnn { 300 } else { 40 }),
                train_batch: if cnn { 128 } else { 32 },
                steps: args.aa_steps,
                queries: args.aa_queries,
                checkpoint: args.eval_checkpoint.clone(),
                data_dir: args.data_dir.clone(),
                cache_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-cache"),
                seed: 0,
            };
            eprintln!(
                "AutoAttack on {m}: {}...",
                match &cfg.checkpoint {
                    Some(p) => format!("weights {}", p.display()),
                    None => format!(
                        "a model SAT-trained for {} steps (cached in {})",
                        cfg.train_steps,
                        cfg.cache_dir.display()
                    ),
                }
            );
            let (model, path) =
                bench::robust_model(m, &cfg, &device).map_err(anyhow::Error::msg)?;
            let aa = bench::run_autoattack(&model, &path, &cfg, &device, &mut aa_observer())
                .map_err(anyhow::Error::msg)?;
            let mut rows = bench::aa_rows(&aa);
            if torchattacks {
                let threads = std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1);
                eprintln!("torchattacks' AutoAttack on the same weights and images...");
                if let Some(reference) = torchattacks_aa(
                    &aa,
                    threads,
                    args.aa_steps.unwrap_or(100),
                    args.aa_queries.unwrap_or(5000),
                ) {
                    merge_torchattacks(&mut rows, &reference, aa.shape[0]);
                }
            }
            all.extend(rows);
            aa_runs.push(serde_json::json!({
                "model": aa.model,
                "checkpoint": aa.checkpoint,
                "attack": aa.attack,
                "eps": aa.eps,
                "images": aa.shape[0],
            }));
        }
    }
    println!(
        "| model | step | batch | rslad ms | images/s | peak MB | PyTorch ms | rslad/PyTorch | images |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &all {
        let opt =
            |v: Option<f64>, d: usize| v.map(|x| format!("{x:.d$}")).unwrap_or_else(|| "–".into());
        println!(
            "| {} | {} | {} | {:.1} | {} | {} | {} | {} | {} |",
            r.model,
            r.step,
            r.batch,
            r.median_ms,
            // Whole evaluation attacks run at a few images per second.
            if r.images_per_second < 10.0 {
                format!("{:.2}", r.images_per_second)
            } else {
                format!("{:.0}", r.images_per_second)
            },
            opt(r.peak_mb, 0),
            opt(r.pytorch_ms, 1),
            opt(r.ratio, 2),
            r.note.as_deref().unwrap_or("")
        );
    }
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "rslad_version": env!("CARGO_PKG_VERSION"),
            "backend": rslad::backend::describe(),
            "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "rows": all,
            "autoattack": aa_runs,
        });
        rslad::io::write_atomic(path, serde_json::to_string_pretty(&doc)?.as_bytes())
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    Ok(())
}
