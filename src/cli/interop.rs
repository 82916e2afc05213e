//! `rslad import` and `rslad export`.

use anyhow::{bail, Context};
use clap::Args;
use rslad::data::{self, Split};
use rslad::interop::{self, Layout};
use rslad::models::{save_model, ModelSpec};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// A PyTorch state dict (.pt, .pth; plain, under "state_dict", or from nn.DataParallel)
    /// or a .safetensors file with PyTorch keys.
    #[arg(long)]
    from: PathBuf,
    /// The rslad model it is (see `rslad models`), e.g. wrn-34-10 or wrn-70-16.
    #[arg(long)]
    model: String,
    /// Key layout: trades, robustbench or rslad (default: the model's reference).
    #[arg(long)]
    layout: Option<String>,
    /// The dataset it was trained on (sets input shape and classes): cifar10, cifar100,
    /// fashion-mnist.
    #[arg(long, default_value = "cifar10")]
    dataset: String,
    /// Write the rslad checkpoint here.
    #[arg(long)]
    out: PathBuf,
    /// Print the imported model's clean accuracy on this dataset's test set.
    #[arg(long)]
    verify_dataset: Option<String>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Test images used by --verify-dataset (default: all).
    #[arg(long)]
    verify_examples: Option<usize>,
}

pub fn run_import(args: ImportArgs) -> anyhow::Result<()> {
    let device = rslad::backend::default_device();
    let inputs = [args.from.as_path()];
    super::output::check(
        "--out",
        &args.out,
        &inputs,
        super::output::Kind::Safetensors,
    )?;
    if args.verify_examples.is_some() && args.verify_dataset.is_none() {
        bail!("--verify-examples counts the test images of --verify-dataset; give that too");
    }
    if args.verify_examples == Some(0) {
        bail!("--verify-examples 0 verifies nothing; give at least 1 (or leave it out for all)");
    }
    let kind: data::DatasetKind = args.dataset.parse()?;
    let spec = ModelSpec::for_dataset(args.model.parse()?, kind);
    spec.check_size().map_err(anyhow::Error::msg)?;
    let layout: Option<Layout> = args.layout.as_deref().map(str::parse).transpose()?;
    let (model, report) = interop::import(&args.from, &spec, layout, &device).map_err(|e| {
        // The dataset sets the first layer's channels and the last one's classes: the usual
        // cause of a shape mismatch there is --dataset left at its default.
        match e {
            interop::InteropError::Mismatch { .. } => anyhow::anyhow!(
                "{e}\n(built for --dataset {kind}: {} input, {} classes; weights trained on \
                 another dataset differ in the first and last layers)",
                spec.input,
                spec.num_classes
            ),
            other => other.into(),
        }
    })?;
    eprintln!(
        "imported {} tensors from {} into {}",
        report.loaded,
        args.from.display(),
        spec.name
    );
    if !report.ignored.is_empty() {
        eprintln!(
            "ignored {} keys that hold nothing rslad needs (e.g. {})",
            report.ignored.len(),
            report.ignored[0]
        );
    }
    for note in &report.notes {
        eprintln!("note: {note}");
    }
    if let Some(d) = &args.verify_dataset {
        let vkind: data::DatasetKind = d.parse()?;
        if vkind.shape() != spec.input || vkind.num_classes() != spec.num_classes {
            bail!("--verify-dataset {vkind} does not fit the imported model's input and classes");
        }
        let test = data::load(
            vkind,
            args.data_dir.as_deref(),
            Split::Test,
            args.verify_examples,
        )?;
        let n = test.len();
        let valid = burn::module::Module::valid(&model);
        let (clean, _) = rslad::eval::clean_pass(&valid, &Arc::new(test), 256, &device);
        let acc = clean.iter().filter(|&&c| c).count() as f64 / n.max(1) as f64;
        println!(
            "clean accuracy of the imported {} on {} ({n} test images): {:.2}%",
            spec.name,
            vkind,
            100.0 * acc
        );
    }
    // Written last: a failed verification leaves no output behind.
    save_model(
        &model,
        &args.out,
        &[("rslad.imported_from", args.from.display().to_string())],
    )?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// An rslad checkpoint.
    #[arg(long)]
    checkpoint: PathBuf,
    /// torch: safetensors with the PyTorch reference definition's keys; onnx: an ONNX graph
    /// with the weights embedded.
    #[arg(long, default_value = "torch")]
    format: String,
    /// Key layout of the torch format (default: the model's reference definition).
    #[arg(long)]
    layout: Option<String>,
    #[arg(long)]
    out: PathBuf,
}

pub fn run_export(args: ExportArgs) -> anyhow::Result<()> {
    let device = rslad::backend::default_device();
    let kind = match args.format.as_str() {
        "onnx" => super::output::Kind::Onnx,
        _ => super::output::Kind::Safetensors,
    };
    super::output::check("--out", &args.out, &[args.checkpoint.as_path()], kind)?;
    if args.format == "onnx" && args.layout.is_some() {
        bail!("--layout names the torch format's keys; an ONNX graph has no key layout");
    }
    // The torch format is a safetensors file: under a torch.save name, `torch.load` and
    // `rslad import` would both take it for a pickle.
    let ext = args
        .out
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase());
    if args.format == "torch" && matches!(ext.as_deref(), Some("pt" | "pth" | "bin" | "ckpt")) {
        bail!(
            "--out {}: the torch format is a safetensors file (load it with \
             safetensors.torch.load_file); name it .safetensors",
            args.out.display()
        );
    }
    let model = rslad::models::load_model(&args.checkpoint, &device, None)?;
    let layout: Option<Layout> = args.layout.as_deref().map(str::parse).transpose()?;
    match args.format.as_str() {
        "torch" => {
            let layout = interop::export_torch(&model, &args.out, layout)
                .with_context(|| format!("exporting {}", args.checkpoint.display()))?;
            eprintln!(
                "wrote {} ({} in the {layout} layout); in PyTorch: model.load_state_dict(safetensors.torch.load_file(...), strict=True)",
                args.out.display(),
                model.spec.name
            );
        }
        #[cfg(feature = "onnx")]
        "onnx" => {
            interop::export_onnx(&model, &args.out)
                .with_context(|| format!("exporting {}", args.checkpoint.display()))?;
            eprintln!(
                "wrote {} ({}; one input [batch, {}, {}, {}] in [0,1], one output: the logits)",
                args.out.display(),
                model.spec.name,
                model.spec.input.channels,
                model.spec.input.height,
                model.spec.input.width
            );
        }
        #[cfg(not(feature = "onnx"))]
        "onnx" => {
            bail!("this build has no ONNX export: build with the `onnx` feature (on by default)")
        }
        other => bail!("unknown export format '{other}': torch or onnx"),
    }
    Ok(())
}
