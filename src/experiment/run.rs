//! Running cells: training, then the evaluations each cell's results files record.

use super::config::*;
use crate::attacks::{self, AttackContext};
use crate::data::{self, DatasetKind, Split};
use crate::eval::{self, EvalConfig, EvalResults};
use crate::models::load_model;
use crate::train::{self, Observer};
use std::path::{Path, PathBuf};

/// Runs one cell to the end (resuming whatever it had done).
pub fn run_cell(
    cfg: &ExperimentConfig,
    out: &Path,
    cell: &Cell,
    device: &burn::prelude::Device,
    observer: &mut dyn Observer,
) -> Result<(), String> {
    let dir = cell_dir(out, cell);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let eps = cfg.eps()?;
    let kind = cfg.kind()?;
    let best = match &cell.checkpoint {
        Some(p) => {
            if !p.is_file() {
                return Err(format!(
                    "{}: the {:?} checkpoint given in the experiment file is missing",
                    p.display(),
                    cell.role
                ));
            }
            p.clone()
        }
        None => {
            if let Some(teacher) = &cell.train.teacher {
                if !teacher.is_file() {
                    return Err(format!(
                        "cell {} needs the teacher {}, which is not trained yet: run the teacher cell first",
                        cell.name,
                        teacher.display()
                    ));
                }
            }
            let tc = cell.train.clone().resolve()?;
            train::run(&tc, device, observer).map_err(|e| e.to_string())?;
            dir.join("best.safetensors")
        }
    };
    let last = if cell.checkpoint.is_some() {
        best.clone()
    } else {
        dir.join("last.safetensors")
    };
    let attacks = cfg.attacks.clone().unwrap_or_else(|| "paper".into());
    let n = cfg.eval_examples.unwrap_or(1000);
    // The surrogate only crafts transfer attacks: it gets no tables of its own.
    let evals: Vec<(&str, &PathBuf, String)> = if cell.role == Role::Surrogate {
        Vec::new()
    } else {
        let mut v = vec![("eval-best.json", &best, attacks.clone())];
        if cell.checkpoint.is_none() && cfg.eval_last.unwrap_or(true) {
            v.push(("eval-last.json", &last, attacks.clone()));
        }
        let blackbox = cell.role != Role::Student
            || cfg
                .blackbox_seeds
                .as_ref()
                .is_none_or(|b| b.contains(&cell.seed));
        if let (Some(s), true) = (cfg.surrogate_checkpoint(out), blackbox) {
            let q = cfg.square_queries.unwrap_or(5000);
            v.push((
                "blackbox-best.json",
                &best,
                format!("transfer:{},square:queries={q}", s.display()),
            ));
        }
        v
    };
    for (file, ckpt, list) in evals {
        let path = dir.join(file);
        if path.is_file() {
            continue;
        }
        let r = match same_weights_result(&dir, file, ckpt) {
            Some(r) => {
                observer.message(&format!(
                    "{}: {} holds the best checkpoint's weights: its results are the same",
                    cell.name,
                    ckpt.display()
                ));
                r
            }
            None => {
                observer.message(&format!(
                    "{}: evaluating {} with {list}",
                    cell.name,
                    ckpt.display()
                ));
                evaluate_file(ckpt, kind, cfg, eps, &list, n, device, observer)?
            }
        };
        crate::io::write_atomic(
            &path,
            serde_json::to_string_pretty(&r)
                .expect("results serialise")
                .as_bytes(),
        )
        .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let points = if cell.role == Role::Surrogate {
        0
    } else {
        cfg.eps_sweep.unwrap_or(9)
    };
    let sweep_path = dir.join("sweep.json");
    if points > 1 && !sweep_path.is_file() {
        observer.message(&format!("{}: robust accuracy against eps", cell.name));
        let mut sweep = Vec::new();
        for k in 0..points {
            let e = 2.0 * eps * k as f64 / (points - 1) as f64;
            let r = evaluate_file(
                &best,
                kind,
                cfg,
                e,
                "pgd-sat",
                n.min(500),
                device,
                &mut crate::train::Silent,
            )?;
            sweep.push(serde_json::json!({"eps": e, "robust_accuracy": r.attacks[0].robust_accuracy, "clean_accuracy": r.clean_accuracy}));
        }
        crate::io::write_atomic(
            &sweep_path,
            serde_json::to_string_pretty(&sweep)
                .expect("json")
                .as_bytes(),
        )
        .map_err(|e| format!("{}: {e}", sweep_path.display()))?;
    }
    let record = CellRecord {
        cell: cell.clone(),
        dataset: cfg.dataset.clone(),
        eps,
        finished: true,
    };
    crate::io::write_atomic(
        &dir.join("cell.json"),
        serde_json::to_string_pretty(&record)
            .expect("json")
            .as_bytes(),
    )
    .map_err(|e| e.to_string())
}

/// The last checkpoint is often the best one (the final epoch has the lowest learning rate).
/// Evaluation is seeded and deterministic, so the same weights get the best checkpoint's
/// results, relabelled, instead of a second run of every attack.
fn same_weights_result(dir: &Path, file: &str, ckpt: &Path) -> Option<EvalResults> {
    if file != "eval-last.json" {
        return None;
    }
    let mut r: EvalResults =
        serde_json::from_str(&std::fs::read_to_string(dir.join("eval-best.json")).ok()?).ok()?;
    // The results belong to the weights whose hash they recorded.
    let hash = crate::io::sha256_file(ckpt).ok()?;
    if r.checkpoint_sha256.as_deref() != Some(hash.as_str()) {
        return None;
    }
    r.checkpoint = Some(ckpt.display().to_string());
    Some(r)
}

#[allow(clippy::too_many_arguments)]
fn evaluate_file(
    ckpt: &Path,
    kind: DatasetKind,
    cfg: &ExperimentConfig,
    eps: f64,
    list: &str,
    n: usize,
    device: &burn::prelude::Device,
    observer: &mut dyn Observer,
) -> Result<EvalResults, String> {
    let spec = crate::models::peek_spec(ckpt).map_err(|e| e.to_string())?;
    if spec.input != kind.shape() || spec.num_classes != kind.num_classes() {
        return Err(format!(
            "{}: the checkpoint is a {} for {:?} with {} classes, not for {kind}",
            ckpt.display(),
            spec.name,
            spec.input,
            spec.num_classes
        ));
    }
    let model = load_model(ckpt, device, Some(&spec)).map_err(|e| e.to_string())?;
    let test = data::load(kind, cfg.data_dir.as_deref(), Split::Test, Some(n))
        .map_err(|e| e.to_string())?;
    let ctx = AttackContext {
        eps,
        seed: 0,
        device,
        target: &model.spec,
    };
    let attacks = attacks::parse_list(list, &ctx).map_err(|e| e.to_string())?;
    let ecfg = EvalConfig {
        eps,
        batch_size: cfg.eval_batch_size.unwrap_or(256),
        seed: 0,
        sanity_checks: false,
    };
    let mut r = eval::evaluate(
        &model,
        test,
        0,
        &attacks,
        &ecfg,
        device,
        &mut |p| match &p.stage {
            Some(_) => observer.eval_stage(&p),
            None => observer.eval_progress(p.attack, p.done, p.total, p.robust),
        },
    );
    r.checkpoint = Some(ckpt.display().to_string());
    r.checkpoint_sha256 = crate::io::sha256_file(ckpt).ok();
    Ok(r)
}

/// Runs every unfinished cell (or only `only`), in order.
pub fn run(
    cfg: &ExperimentConfig,
    out: &Path,
    only: Option<usize>,
    device: &burn::prelude::Device,
    observer: &mut dyn Observer,
) -> Result<(), String> {
    let cells = cfg.cells(out)?;
    cfg.validate(&cells)?;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let recorded = toml::to_string(cfg).map_err(|e| e.to_string())?;
    crate::io::write_atomic(&out.join("experiment.toml"), recorded.as_bytes())
        .map_err(|e| e.to_string())?;
    if let Some(i) = only {
        let cell = cells
            .get(i)
            .ok_or_else(|| format!("--cell {i}: the experiment has cells 0..{}", cells.len()))?;
        if is_finished(out, cell) {
            observer.message(&format!("cell {i} ({}) is finished", cell.name));
            return Ok(());
        }
        return run_cell(cfg, out, cell, device, observer);
    }
    for cell in &cells {
        if is_finished(out, cell) {
            observer.message(&format!(
                "cell {} ({}) is finished, skipped",
                cell.index, cell.name
            ));
            continue;
        }
        observer.message(&format!(
            "cell {}/{}: {}",
            cell.index + 1,
            cells.len(),
            cell.name
        ));
        run_cell(cfg, out, cell, device, observer)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The last checkpoint reuses the best one's results only when its bytes are the same.
    #[test]
    fn last_checkpoint_reuses_results_only_for_identical_weights() {
        let dir = std::env::temp_dir().join(format!("rslad-same-weights-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (best, last) = (dir.join("best.safetensors"), dir.join("last.safetensors"));
        std::fs::write(&best, b"weights").unwrap();
        std::fs::write(&last, b"weights").unwrap();
        let r = EvalResults {
            model: crate::models::ModelSpec::for_dataset(
                "cnn-small".parse().unwrap(),
                DatasetKind::FashionMnist,
            ),
            checkpoint: Some(best.display().to_string()),
            checkpoint_sha256: crate::io::sha256_file(&best).ok(),
            dataset: "fashion-mnist".into(),
            eps: 0.1,
            seed: 0,
            backend: "flex".into(),
            example_ids: vec![0, 1],
            clean_accuracy: 0.5,
            clean: "10".into(),
            attacks: Vec::new(),
            warnings: Vec::new(),
            seconds: 1.0,
        };
        std::fs::write(
            dir.join("eval-best.json"),
            serde_json::to_string(&r).unwrap(),
        )
        .unwrap();
        let copy = same_weights_result(&dir, "eval-last.json", &last).unwrap();
        assert_eq!(copy.checkpoint, Some(last.display().to_string()));
        assert_eq!(copy.clean, r.clean);
        assert!(same_weights_result(&dir, "blackbox-best.json", &last).is_none());
        std::fs::write(&last, b"other weights").unwrap();
        assert!(same_weights_result(&dir, "eval-last.json", &last).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The paper experiments train each baseline on its official code's schedule and batch
    /// size and RSLAD (with natural and SAT) on RSLAD's 300 epochs (docs/spec/methods.md).
    #[test]
    fn paper_experiments_give_each_baseline_its_official_schedule() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments");
        for (file, ard_batch) in [("cifar10-paper.toml", 128), ("cifar100-paper.toml", 256)] {
            let cfg = ExperimentConfig::from_file(&root.join(file)).unwrap();
            let cells = cfg.cells(Path::new("/tmp/unused")).unwrap();
            let mut seen = std::collections::BTreeSet::new();
            for cell in cells.iter().filter(|c| c.role == Role::Student) {
                let t = cell.train.clone().resolve().unwrap();
                let want: (usize, Vec<usize>, usize) = match cell.method.as_str() {
                    "trades" => (76, vec![74, 89, 99], 128),
                    "ard" => (200, vec![100, 150], ard_batch),
                    "iad" => (200, vec![100, 150], 128),
                    _ => (300, vec![215, 260, 285], 128),
                };
                assert_eq!(
                    (t.epochs, t.milestones.clone(), t.batch_size),
                    want,
                    "{file} {}",
                    cell.name
                );
                assert_eq!(t.method.bn_passes, crate::methods::BnPasses::Official);
                if cell.method == "iad" {
                    assert_eq!(t.method.iad_begin, 60, "IAD's introspection from epoch 60");
                }
                if cell.method == "rslad" {
                    let scale = if file.starts_with("cifar100") {
                        10.0
                    } else {
                        1.0
                    };
                    assert_eq!(t.method.kl_scale, scale, "{file}");
                }
                seen.insert(cell.method.clone());
            }
            assert_eq!(seen.len(), 6, "{file}: every method has a cell");
        }
    }
}
