//! `rslad bench`: the speed table, with PyTorch beside it where `import torch` works.

use clap::Args;
use rslad::bench::{self, BenchRow, MemoryProbe};
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

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.batch_size == Some(0) {
        anyhow::bail!("--batch-size 0: the batch size must be at least 1");
    }
    if args.reps == 0 {
        anyhow::bail!("--reps 0 times nothing; give at least 1");
    }
    if let Some(p) = args.json.as_ref().filter(|p| p.is_dir()) {
        anyhow::bail!(
            "--json {}: is a directory; give the results file's path",
            p.display()
        );
    }
    let device = rslad::backend::default_device();
    let models = if args.model.is_empty() {
        vec!["cnn-small".to_string(), "resnet18".to_string()]
    } else {
        args.model.clone()
    };
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
        if torch {
            "yes"
        } else {
            "no (python3 cannot import torch)"
        }
    );
    let mut all: Vec<BenchRow> = Vec::new();
    for m in &models {
        let batch = args
            .batch_size
            .unwrap_or(if m.starts_with("cnn") { 128 } else { 32 });
        eprintln!("benchmarking {m} at batch {batch}...");
        let mut rows = bench::run_model(m, batch, args.reps, &device, &mut AllocProbe)
            .map_err(anyhow::Error::msg)?;
        if torch {
            if let Some(reference) = pytorch(m, batch, args.reps) {
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
    println!(
        "| model | step | batch | rslad ms | images/s | peak MB | PyTorch ms | rslad/PyTorch |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &all {
        let opt =
            |v: Option<f64>, d: usize| v.map(|x| format!("{x:.d$}")).unwrap_or_else(|| "–".into());
        println!(
            "| {} | {} | {} | {:.1} | {:.0} | {} | {} | {} |",
            r.model,
            r.step,
            r.batch,
            r.median_ms,
            r.images_per_second,
            opt(r.peak_mb, 0),
            opt(r.pytorch_ms, 1),
            opt(r.ratio, 2)
        );
    }
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "rslad_version": env!("CARGO_PKG_VERSION"),
            "backend": rslad::backend::describe(),
            "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "rows": all,
        });
        rslad::io::write_atomic(path, serde_json::to_string_pretty(&doc)?.as_bytes())
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    Ok(())
}
