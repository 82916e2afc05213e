//! Reports from results files only (this module never loads a model): the paper-style
//! white-box and black-box tables, side by side with the paper's numbers where the setup
//! matches, as Markdown, CSV and JSON, and SVG plots of training curves and of robust accuracy
//! against ε.

mod plots;
pub use plots::PlotError;
pub mod stats;

use crate::eval::EvalResults;
use crate::experiment::CellRecord;
use crate::train::layout::{EvalFile, RunLayout};
use crate::train::EpochMetrics;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{}: {source} (not an experiment directory?)", path.display())]
    NotExperiment {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{} holds results on {} at eps {:.4}, but {} on {} at eps {:.4}: one report covers one \
         dataset and one eps (its differences are paired on the same test images); report them \
         separately",
        first.display(),
        first_dataset,
        first_eps,
        other.display(),
        other_dataset,
        other_eps
    )]
    Mixed {
        first: PathBuf,
        first_dataset: String,
        first_eps: f64,
        other: PathBuf,
        other_dataset: String,
        other_eps: f64,
    },
    #[error(
        "{} and {} were evaluated on other test images (the SHA-256 of their data differs): \
         their differences cannot be paired; report them separately",
        first.display(),
        other.display()
    )]
    OtherImages { first: PathBuf, other: PathBuf },
    #[error(
        "{} is already there, in a folder that holds no rslad report (no report.md of one): \
         the report would replace it; give another folder (--out), or move the file away",
        file.display()
    )]
    NotAReport { file: PathBuf },
    #[error(
        "{} and {} hold seeds of {model} {method} trained with other settings ({}): their mean \
         and spread would mix two setups as if they were seeds of one; report them separately",
        first.display(),
        other.display(),
        changes.join(", ")
    )]
    OtherSettings {
        model: String,
        method: String,
        first: PathBuf,
        other: PathBuf,
        changes: Vec<String>,
    },
    #[error("{file}: {source}")]
    Plot {
        file: String,
        #[source]
        source: PlotError,
    },
}

/// The white-box columns of the paper's tables, in order.
pub const WHITE_BOX: &[&str] = &["FGSM", "PGD_SAT", "PGD_TRADES", "CW", "AA"];
pub const BLACK_BOX: &[&str] = &["Transfer-PGD", "Transfer-CW", "Square"];

/// One row of a table: a model trained by a method, at one checkpoint, averaged over seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub role: String,
    pub model: String,
    pub method: String,
    /// "best" or "last".
    pub checkpoint: String,
    pub seeds: Vec<u64>,
    pub dataset: String,
    pub eps: f64,
    pub n_examples: usize,
    /// Column → mean accuracy in [0,1] over seeds.
    pub accuracy: BTreeMap<String, f64>,
    /// Column → standard deviation over seeds (0 for one seed).
    pub std: BTreeMap<String, f64>,
}

/// Everything a report shows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub white_box: Vec<Row>,
    pub black_box: Vec<Row>,
    /// (model, method) → per-epoch metrics of the first seed.
    pub curves: Vec<(String, String, Vec<EpochMetrics>)>,
    /// (model, method) → (ε, robust accuracy) of the best checkpoint.
    pub sweeps: Vec<Sweep>,
    /// RSLAD against each other student method, per column, with 95% intervals.
    #[serde(default)]
    pub comparisons: Vec<stats::Comparison>,
    /// The teacher against the SAT student, per column.
    #[serde(default)]
    pub teacher_margin: Vec<stats::Comparison>,
    /// Column → the attack's settings in words (its start among them), from the results files.
    #[serde(default)]
    pub attack_settings: BTreeMap<String, String>,
    /// Cells of the experiments' grids (`experiment.toml`) that have not finished, by name, and
    /// how many cells the grids have: a report on a running experiment says what it lacks.
    #[serde(default)]
    pub unfinished: Vec<String>,
    #[serde(default)]
    pub grid_cells: usize,
    pub warnings: Vec<String>,
}

/// A JSON file that may be absent (a cell not run yet); a file that is there but cannot be
/// read is a warning, never a silently missing row.
fn read_json_or_warn<T: for<'de> Deserialize<'de>>(
    path: &Path,
    warnings: &mut Vec<String>,
) -> Option<T> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            warnings.push(format!("{}: unreadable ({e}); left out", path.display()));
            return None;
        }
    };
    match serde_json::from_str(&text) {
        Ok(v) => Some(v),
        Err(e) => {
            warnings.push(format!(
                "{}: not a valid rslad file ({e}); left out",
                path.display()
            ));
            None
        }
    }
}

/// A results file whose outcomes are consistent (one 0/1 per example, accuracies that are
/// theirs, at least one example); anything else is a warning and left out, never a number.
fn read_results(path: &Path, warnings: &mut Vec<String>) -> Option<EvalResults> {
    let r: EvalResults = read_json_or_warn(path, warnings)?;
    let defect = match crate::eval::check_outcomes(&r).and(crate::eval::check_accuracies(&r)) {
        Err(d) => d.to_string(),
        Ok(()) if r.example_ids.is_empty() => "no examples were evaluated".into(),
        Ok(()) => return Some(r),
    };
    warnings.push(format!("{}: {defect}; left out", path.display()));
    None
}

fn columns(r: &EvalResults) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    m.insert("Clean".to_string(), r.clean_accuracy);
    for a in &r.attacks {
        m.insert(a.name.clone(), a.robust_accuracy);
    }
    m
}

/// Mean and sample standard deviation (divided by seeds − 1; 0 for one seed) over seeds, per
/// column: with three seeds the population form would understate the spread by a fifth.
fn aggregate(results: &[BTreeMap<String, f64>]) -> (BTreeMap<String, f64>, BTreeMap<String, f64>) {
    let mut mean = BTreeMap::new();
    let mut std = BTreeMap::new();
    let keys: Vec<String> = results.iter().flat_map(|r| r.keys().cloned()).collect();
    for k in keys {
        let v: Vec<f64> = results.iter().filter_map(|r| r.get(&k).copied()).collect();
        let m = v.iter().sum::<f64>() / v.len() as f64;
        let dof = v.len().saturating_sub(1).max(1) as f64;
        let s = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / dof).sqrt();
        mean.insert(k.clone(), m);
        std.insert(k, s);
    }
    (mean, std)
}

/// Model, method and (ε, robust accuracy) points of one robustness-against-ε curve.
pub type Sweep = (String, String, Vec<(f64, f64)>);

/// Cells grouped by (role order, model, method, role): (seed, directory, record) of each.
type CellGroups = BTreeMap<(u8, String, String, String), Vec<(u64, PathBuf, CellRecord)>>;

/// The seeds of one row are one setup: cells of the same model and method from several
/// experiment folders must agree in every setting but the seed and where things are.
fn one_setup(
    model: &str,
    method: &str,
    members: &[(u64, PathBuf, CellRecord)],
) -> Result<(), ReportError> {
    let Some(((_, first_dir, first), rest)) = members.split_first() else {
        return Ok(());
    };
    for (_, dir, rec) in rest {
        // Cells of one row differ in seed and name; the model is one however it is spelled.
        let changes =
            crate::experiment::cell_changes(&first.cell, &rec.cell, &["name", "seed", "model"]);
        if !changes.is_empty() {
            return Err(ReportError::OtherSettings {
                model: model.to_string(),
                method: method.to_string(),
                first: first_dir.clone(),
                other: dir.clone(),
                changes,
            });
        }
    }
    Ok(())
}

/// Collects the cells of experiment directories (`DIR/cells/*`) into a report.
pub fn collect(dirs: &[PathBuf]) -> Result<Report, ReportError> {
    let mut groups: CellGroups = BTreeMap::new();
    let mut warnings = Vec::new();
    // The first cell or results file read: every other one must be on its dataset and eps
    // (checked on every cell, before a seed found in two folders keeps only the first).
    let mut setting: Option<(PathBuf, String, f64)> = None;
    // The first results file that recorded its test images' hash: every other one that did
    // must be on the same images (pairing over example ids assumes it).
    let mut images: Option<(PathBuf, String)> = None;
    let (mut unfinished, mut grid_cells) = (Vec::new(), 0);
    for dir in dirs {
        let grid = grid_cells_of(dir, &mut warnings);
        if let Some(g) = &grid {
            grid_cells += g.names.len();
            unfinished.extend(g.unfinished.iter().cloned());
        }
        let cells = RunLayout::new(dir).cells();
        let entries = std::fs::read_dir(&cells).map_err(|source| ReportError::NotExperiment {
            path: cells.clone(),
            source,
        })?;
        for e in entries.flatten() {
            let cell = RunLayout::new(&e.path());
            let Some(rec) = read_json_or_warn::<CellRecord>(&cell.cell_record(), &mut warnings)
            else {
                continue;
            };
            // The model's name becomes a plot's file name: only a plain model name may.
            let plain = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
            if rec.cell.model.is_empty() || !rec.cell.model.chars().all(plain) {
                warnings.push(format!(
                    "{}: the model '{}' is not a model name; left out",
                    cell.cell_record().display(),
                    rec.cell.model
                ));
                continue;
            }
            // A seed or method taken out of the experiment file is out of its tables too.
            if grid
                .as_ref()
                .is_some_and(|g| !g.names.contains(&rec.cell.name))
            {
                warnings.push(format!(
                    "{}: cell {} is not in the grid of {} now (a seed, method or model taken \
                     out?); left out",
                    e.path().display(),
                    rec.cell.name,
                    RunLayout::new(dir).experiment_config().display()
                ));
                continue;
            }
            // A copy or a folder moved aside inside cells/ would count its seed twice.
            if e.file_name().to_str() != Some(rec.cell.name.as_str()) {
                warnings.push(format!(
                    "{}: holds the results of cell {} (a copy, or a folder moved aside?); left out",
                    e.path().display(),
                    rec.cell.name
                ));
                continue;
            }
            same_setting(&mut setting, &cell.cell_record(), (&rec.dataset, rec.eps))?;
            let order = match rec.cell.role {
                crate::experiment::Role::Teacher => 0,
                crate::experiment::Role::Surrogate => 1,
                crate::experiment::Role::Student => 2,
            };
            let method = match &rec.cell.train.kl_reduction {
                Some(r) => format!("{}:{r}", rec.cell.method),
                None => rec.cell.method.clone(),
            };
            // One model however the experiment file spelled it (`CNN-Small`): one row, one
            // plot, paired with the other methods on it.
            groups
                .entry((
                    order,
                    crate::experiment::canonical_model(&rec.cell.model),
                    method,
                    rec.cell.role.to_string(),
                ))
                .or_default()
                .push((rec.cell.seed, e.path(), rec));
        }
    }
    let mut report = Report {
        warnings,
        unfinished,
        grid_cells,
        ..Report::default()
    };
    let mut for_stats = Vec::new();
    for ((_, model, method, role), members) in groups.iter_mut() {
        // Seed order, not directory order: "the first seed" is then seed order's first.
        members.sort_by_key(|m| m.0);
        // Before a seed found twice keeps one run: two setups are refused, not one dropped.
        one_setup(model, method, members)?;
        // The same cell in two experiment folders: one seed is one run in a mean.
        let before = members.len();
        members.dedup_by_key(|m| m.0);
        if members.len() < before {
            report.warnings.push(format!(
                "{model} {method}: a seed appears in more than one of the folders reported; \
                 the first folder's run is used"
            ));
        }
        for file in EvalFile::ALL {
            let (checkpoint, black) = (file.checkpoint(), file.black_box());
            let mut read = Vec::new();
            for (s, p, rec) in members.iter() {
                let path = RunLayout::new(p).eval(file);
                if let Some(r) = read_results(&path, &mut report.warnings) {
                    if crate::experiment::results_of_other_weights(p, &rec.cell, file, &r) {
                        report.warnings.push(format!(
                            "{}: computed on other weights than the cell's {} checkpoint \
                             holds now (trained on or replaced since); left out until \
                             `rslad experiment` evaluates them again",
                            path.display(),
                            file.checkpoint()
                        ));
                        continue;
                    }
                    same_setting(&mut setting, &path, (&r.dataset, r.eps))?;
                    same_images(&mut images, &path, &r)?;
                    read.push((*s, r));
                }
            }
            let (seeds, results): (Vec<u64>, Vec<EvalResults>) = read.into_iter().unzip();
            if results.is_empty() {
                continue;
            }
            if checkpoint == "best" {
                for_stats.push(stats::GroupResults {
                    role: role.clone(),
                    model: model.clone(),
                    method: method.clone(),
                    black_box: black,
                    results: seeds.iter().copied().zip(results.iter().cloned()).collect(),
                });
            }
            let cols: Vec<BTreeMap<String, f64>> = results.iter().map(columns).collect();
            let (accuracy, std) = aggregate(&cols);
            // A column some seeds lack is a mean over fewer seeds than the row lists.
            for column in accuracy.keys() {
                let lacking: Vec<u64> = seeds
                    .iter()
                    .zip(&cols)
                    .filter(|(_, c)| !c.contains_key(column))
                    .map(|(s, _)| *s)
                    .collect();
                if !lacking.is_empty() {
                    report.warnings.push(format!(
                        "{model} {method} ({checkpoint}): seeds {lacking:?} have no {column} \
                         result; its column is the mean over the other seeds"
                    ));
                }
            }
            for r in &results {
                report
                    .warnings
                    .extend(r.warnings.iter().map(|w| format!("{model} {method}: {w}")));
                for a in &r.attacks {
                    let words = describe_settings(&a.settings);
                    match report.attack_settings.get(&a.name) {
                        None => {
                            report.attack_settings.insert(a.name.clone(), words);
                        }
                        Some(first) if *first != words => report.warnings.push(format!(
                            "{model} {method}: {} ran with other settings than in the table \
                             above ({words})",
                            a.name
                        )),
                        Some(_) => {}
                    }
                }
            }
            let row = Row {
                role: role.clone(),
                model: model.clone(),
                method: method.clone(),
                checkpoint: checkpoint.into(),
                seeds,
                dataset: results[0].dataset.clone(),
                eps: results[0].eps,
                n_examples: results[0].example_ids.len(),
                accuracy,
                std,
            };
            if black {
                report.black_box.push(row);
            } else {
                report.white_box.push(row);
            }
        }
        let first = RunLayout::new(&members[0].1);
        let metrics: Vec<EpochMetrics> = std::fs::read_to_string(first.metrics())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if !metrics.is_empty() {
            report.curves.push((model.clone(), method.clone(), metrics));
        }
        let sweep =
            read_json_or_warn::<crate::train::layout::Sweep>(&first.sweep(), &mut report.warnings);
        if let Some(sweep) = sweep.filter(|s| !s.is_empty()) {
            let pts = sweep.iter().map(|p| (p.eps, p.robust_accuracy)).collect();
            report.sweeps.push((model.clone(), method.clone(), pts));
        }
    }
    let (comparisons, margins, warnings) = stats::claim(&for_stats);
    report.comparisons = comparisons;
    report.teacher_margin = margins;
    report.warnings.extend(warnings);
    Ok(report)
}

/// Refuses results on another dataset or eps than the first ones read (`setting`).
fn same_setting(
    setting: &mut Option<(PathBuf, String, f64)>,
    path: &Path,
    (dataset, eps): (&str, f64),
) -> Result<(), ReportError> {
    // Records of older builds spell the dataset as the experiment file did (`fmnist`).
    use crate::experiment::canonical_dataset;
    let same_dataset = |a: &str, b: &str| canonical_dataset(a) == canonical_dataset(b);
    match setting {
        None => *setting = Some((path.to_path_buf(), dataset.to_string(), eps)),
        Some((first, d, e)) if !same_dataset(d, dataset) || (*e - eps).abs() > 1e-9 => {
            return Err(ReportError::Mixed {
                first: first.clone(),
                first_dataset: d.clone(),
                first_eps: *e,
                other: path.to_path_buf(),
                other_dataset: dataset.to_string(),
                other_eps: eps,
            })
        }
        Some(_) => {}
    }
    Ok(())
}

/// Refuses results on other test images than the first ones that recorded theirs.
fn same_images(
    images: &mut Option<(PathBuf, String)>,
    path: &Path,
    r: &EvalResults,
) -> Result<(), ReportError> {
    let Some(hash) = &r.data_sha256 else {
        return Ok(());
    };
    match images {
        None => *images = Some((path.to_path_buf(), hash.clone())),
        Some((first, h)) if h != hash => {
            return Err(ReportError::OtherImages {
                first: first.clone(),
                other: path.to_path_buf(),
            })
        }
        Some(_) => {}
    }
    Ok(())
}

/// The cells of an experiment folder's grid (`experiment.toml`), by name.
struct Grid {
    names: std::collections::HashSet<String>,
    /// Those not finished, in grid order.
    unfinished: Vec<String>,
}

/// The cells of `dir`'s grid; `None` for a folder without `experiment.toml` (a report over
/// hand-made results) or with one that cannot be read (a warning says so).
fn grid_cells_of(dir: &Path, warnings: &mut Vec<String>) -> Option<Grid> {
    let path = RunLayout::new(dir).experiment_config();
    if !path.exists() {
        return None;
    }
    let (cfg, cells) = crate::experiment::ExperimentConfig::from_file(&path)
        .map(|mut cfg| {
            // Older builds recorded an omitted `seeds` as `seeds = []`.
            if cfg.seeds.as_ref().is_some_and(Vec::is_empty) {
                cfg.seeds = None;
            }
            cfg
        })
        .and_then(|cfg| cfg.cells(dir).map(|cells| (cfg, cells)))
        .map_err(|e| {
            warnings.push(format!(
                "{e}; the report cannot say which cells are missing"
            ))
        })
        .ok()?;
    let mut names = Vec::new();
    for c in &cells {
        match crate::experiment::cell_state(&cfg, dir, c) {
            crate::experiment::CellState::Finished => {}
            crate::experiment::CellState::ToDo => names.push(c.name.clone()),
            crate::experiment::CellState::Changed(what) => warnings.push(format!(
                "cell {} finished with other settings than {} now gives ({what}); its rows \
                 are of those settings",
                c.name,
                path.display()
            )),
            crate::experiment::CellState::Stale => warnings.push(format!(
                "cell {}: its black-box results were crafted on another surrogate than the \
                 one there now; `rslad experiment` crafts them again",
                c.name
            )),
        }
    }
    Some(Grid {
        names: cells.into_iter().map(|c| c.name).collect(),
        unfinished: names,
    })
}

/// The paper's numbers (CIFAR-10, ResNet-18 student, TRADES WRN-34-10 teacher, ε = 8/255, best
/// checkpoint), as quoted by later work (docs/spec/results.md): (method, column, accuracy in %).
pub const PAPER_QUOTED: &[(&str, &str, f64)] = &[
    ("sat", "Clean", 83.38),
    ("sat", "AA", 45.83),
    ("trades", "Clean", 81.93),
    ("trades", "AA", 49.23),
    ("ard", "AA", 49.19),
    ("iad", "AA", 49.10),
    ("rslad", "Clean", 83.38),
    ("rslad", "PGD_TRADES", 55.94),
    ("rslad", "AA", 51.49),
];

fn paper_value(row: &Row, column: &str) -> Option<f64> {
    let matches = row.dataset == "cifar10"
        && row.model == "resnet18"
        && row.checkpoint == "best"
        && (row.eps - 8.0 / 255.0).abs() < 1e-4;
    if !matches {
        return None;
    }
    let method = row.method.split(':').next().unwrap_or("");
    PAPER_QUOTED
        .iter()
        .find(|(m, c, _)| *m == method && *c == column)
        .map(|t| t.2)
}

fn cell(row: &Row, column: &str) -> String {
    match row.accuracy.get(column) {
        None => "–".into(),
        Some(v) => {
            let mut s = format!("{:.2}", 100.0 * v);
            if row.seeds.len() > 1 {
                s.push_str(&format!(" ± {:.2}", 100.0 * row.std[column]));
            }
            if let Some(p) = paper_value(row, column) {
                s.push_str(&format!(" ({p:.2})"));
            }
            s
        }
    }
}

/// The paper's `standard` columns, then any other attack the rows ran (a custom list's
/// columns are shown, never dropped).
fn columns_of<'a>(rows: &'a [Row], standard: &[&'a str]) -> Vec<&'a str> {
    let mut cols = standard.to_vec();
    for r in rows {
        for c in r.accuracy.keys().map(String::as_str) {
            if c != "Clean" && !cols.contains(&c) {
                cols.push(c);
            }
        }
    }
    cols
}

fn table(rows: &[Row], columns: &[&str], with_checkpoint: bool) -> String {
    let mut head = vec!["model", "method"];
    if with_checkpoint {
        head.push("checkpoint");
    }
    let mut cols = vec!["Clean"];
    cols.extend_from_slice(columns);
    let mut out = format!("| {} | {} |\n", head.join(" | "), cols.join(" | "));
    out.push_str(&format!("|{}\n", "---|".repeat(head.len() + cols.len())));
    for r in rows {
        let name = if r.role == "student" {
            r.method.clone()
        } else {
            format!("{} ({})", r.method, r.role)
        };
        let mut cells = vec![r.model.clone(), name];
        if with_checkpoint {
            cells.push(r.checkpoint.clone());
        }
        cells.extend(cols.iter().map(|c| cell(r, c)));
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    out
}

/// An attack's settings (its results-file JSON) in words: `key value` pairs, the start spelled
/// out, AutoAttack's components one after the other.
pub fn describe_settings(settings: &serde_json::Value) -> String {
    use serde_json::Value;
    fn value(v: &Value) -> String {
        match v {
            Value::Object(m) => match (m.get("kind"), m.len()) {
                (Some(Value::String(k)), 1) => k.clone(),
                (Some(Value::String(k)), _) => {
                    let rest: Vec<String> = m
                        .iter()
                        .filter(|(key, _)| *key != "kind")
                        .map(|(key, v)| format!("{key} {}", value(v)))
                        .collect();
                    format!("{k} ({})", rest.join(", "))
                }
                _ => describe_settings(v),
            },
            Value::Array(items) => items.iter().map(value).collect::<Vec<_>>().join("; "),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
    let Value::Object(m) = settings else {
        return value(settings);
    };
    if let (Some(Value::String(name)), Some(inner)) = (m.get("name"), m.get("settings")) {
        return format!("{name}: {}", describe_settings(inner));
    }
    let mut parts = Vec::new();
    for (key, v) in m {
        match key.as_str() {
            "seed" => {}
            // Said with the start it qualifies.
            "clip_start" => {}
            "start" => {
                let kind = value(v);
                let clipped = match m.get("clip_start") {
                    Some(Value::Bool(false)) if kind != "none" => ", not clipped to [0,1]",
                    _ => "",
                };
                parts.push(format!("start {kind}{clipped}"));
            }
            _ => parts.push(format!("{key} {}", value(v))),
        }
    }
    parts.join(", ")
}

/// The first line of every `report.md` this module writes: a folder whose `report.md` starts
/// with it holds a report, whose files a new report may replace.
const TITLE: &str = "# rslad report\n";

/// The Markdown report.
pub fn markdown(report: &Report) -> String {
    let mut md = format!("{TITLE}\n");
    if let Some(r) = report.white_box.first() {
        md.push_str(&format!(
            "Dataset {}, L-inf eps = {:.4}, {} test images attacked; accuracy in %{}.\n\n",
            r.dataset,
            r.eps,
            r.n_examples,
            if report.white_box.iter().any(|r| r.seeds.len() > 1) {
                " (mean ± sample standard deviation over seeds)"
            } else {
                ""
            }
        ));
    }
    let any_paper = report.white_box.iter().any(|r| {
        WHITE_BOX
            .iter()
            .chain(["Clean"].iter())
            .any(|c| paper_value(r, c).is_some())
    });
    if !report.unfinished.is_empty() {
        md.push_str(&format!(
            "**Not finished: {} of {} cells** ({}). The tables show the finished cells only; a \
             row's mean and ± are over the seeds that have finished (`seeds` in results.json).\n\n",
            report.unfinished.len(),
            report.grid_cells,
            report.unfinished.join(", ")
        ));
    }
    let has_last = report.white_box.iter().any(|r| r.checkpoint == "last");
    md.push_str(if has_last {
        "## White-box robustness (best and last checkpoint)\n\n"
    } else {
        "## White-box robustness (best checkpoint)\n\n"
    });
    let cols = columns_of(&report.white_box, WHITE_BOX);
    md.push_str(&table(&report.white_box, &cols, true));
    if any_paper {
        md.push_str("\nIn parentheses: the paper's numbers as quoted by later work (docs/spec/results.md), same setup.\n");
    }
    if !report.black_box.is_empty() {
        md.push_str("\n## Black-box robustness (best checkpoint)\n\nTransfer attacks crafted on the surrogate; Square queries the model.\n\n");
        let cols = columns_of(&report.black_box, BLACK_BOX);
        md.push_str(&table(&report.black_box, &cols, false));
    }
    md.push_str(&stats::markdown(
        &report.comparisons,
        &report.teacher_margin,
    ));
    if !report.attack_settings.is_empty() {
        md.push_str("\n## Attack settings\n\n| attack | settings |\n|---|---|\n");
        for (name, words) in &report.attack_settings {
            md.push_str(&format!("| {name} | {words} |\n"));
        }
    }
    if !report.curves.is_empty() || !report.sweeps.is_empty() {
        md.push_str("\n## Plots\n\n");
        let models: std::collections::BTreeSet<&String> = report
            .curves
            .iter()
            .map(|c| &c.0)
            .chain(report.sweeps.iter().map(|s| &s.0))
            .collect();
        for m in models {
            if report.curves.iter().any(|c| &c.0 == m) {
                md.push_str(&format!("![training curves of {m}](curves-{m}.svg)\n\n"));
            }
            if report.sweeps.iter().any(|c| &c.0 == m) {
                md.push_str(&format!(
                    "![robust accuracy against eps for {m}](eps-{m}.svg)\n\n"
                ));
            }
        }
    }
    if !report.warnings.is_empty() {
        md.push_str("\n## Warnings\n\n");
        for w in &report.warnings {
            md.push_str(&format!("- {w}\n"));
        }
    }
    md
}

/// CSV of every row: one line per (row, column).
pub fn csv(report: &Report) -> String {
    let mut out = String::from(
        "table,role,model,method,checkpoint,seeds,dataset,eps,n_examples,column,accuracy,std\n",
    );
    for (name, rows) in [
        ("white_box", &report.white_box),
        ("black_box", &report.black_box),
    ] {
        for r in rows.iter() {
            for (c, v) in &r.accuracy {
                out.push_str(&format!(
                    "{name},{},{},{},{},{},{},{},{},{c},{v:.6},{:.6}\n",
                    r.role,
                    r.model,
                    r.method,
                    r.checkpoint,
                    r.seeds
                        .iter()
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>()
                        .join(" "),
                    r.dataset,
                    r.eps,
                    r.n_examples,
                    r.std[c]
                ));
            }
        }
    }
    out
}

/// Writes report.md, results.json, results.csv and the SVG plots into `out`, which is a new or
/// empty folder or holds a report already (whose plots this report has not are removed).
pub fn write(report: &Report, out: &Path) -> Result<Vec<PathBuf>, ReportError> {
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReportError::Write { path, source }
    };
    let files = files(report)?;
    let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
    let holds_report =
        std::fs::read(out.join("report.md")).is_ok_and(|text| text.starts_with(TITLE.as_bytes()));
    if holds_report {
        remove_stale_plots(out, &names).map_err(write_err(out))?;
    } else if let Some(file) = names
        .iter()
        .map(|n| out.join(n))
        .find(|p| p.symlink_metadata().is_ok())
    {
        // Not a report's folder: a file of the report's names there is somebody's.
        return Err(ReportError::NotAReport { file });
    }
    std::fs::create_dir_all(out).map_err(write_err(out))?;
    let mut written = Vec::new();
    for (name, text) in files {
        let p = out.join(name);
        crate::io::write_atomic(&p, text.as_bytes()).map_err(write_err(&p))?;
        written.push(p);
    }
    Ok(written)
}

/// An earlier report's plots of models this report has not: left there, they would read as
/// part of it.
fn remove_stale_plots(out: &Path, names: &[&str]) -> std::io::Result<()> {
    for entry in std::fs::read_dir(out)?.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let plot =
            (name.starts_with("curves-") || name.starts_with("eps-")) && name.ends_with(".svg");
        if plot && !names.contains(&name) && entry.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// The report's files, by name: the tables, the results, and each model's plots.
fn files(report: &Report) -> Result<Vec<(String, String)>, ReportError> {
    let plot_err = |file: &str| {
        let file = file.to_string();
        move |source| ReportError::Plot { file, source }
    };
    let mut files = vec![
        ("report.md".to_string(), markdown(report)),
        (
            "results.json".to_string(),
            serde_json::to_string_pretty(report).expect("report serialises"),
        ),
        ("results.csv".to_string(), csv(report)),
    ];
    let models: std::collections::BTreeSet<String> = report
        .curves
        .iter()
        .map(|c| c.0.clone())
        .chain(report.sweeps.iter().map(|s| s.0.clone()))
        .collect();
    for m in models {
        let curves: Vec<_> = report
            .curves
            .iter()
            .filter(|c| c.0 == m)
            .map(|c| (c.1.clone(), c.2.clone()))
            .collect();
        if !curves.is_empty() {
            let file = format!("curves-{m}.svg");
            let svg = plots::curves(&m, &curves).map_err(plot_err(&file))?;
            files.push((file, svg));
        }
        let sweeps: Vec<_> = report
            .sweeps
            .iter()
            .filter(|c| c.0 == m)
            .map(|c| (c.1.clone(), c.2.clone()))
            .collect();
        if !sweeps.is_empty() {
            let eps = report.white_box.first().map(|r| r.eps).unwrap_or(0.0);
            let file = format!("eps-{m}.svg");
            let svg = plots::eps_sweep(&m, eps, &sweeps).map_err(plot_err(&file))?;
            files.push((file, svg));
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The start of PGD_TRADES (and whether it is clipped) reaches the settings table.
    #[test]
    fn settings_in_words_name_the_start() {
        let pgd = serde_json::json!({"eps": 0.1, "step_size": 0.0096, "steps": 20,
            "start": {"kind": "uniform"}, "clip_start": false,
            "loss": {"kind": "crossentropy"}, "restarts": 1, "seed": 0});
        let words = describe_settings(&pgd);
        assert!(
            words.contains("start uniform, not clipped to [0,1]"),
            "{words}"
        );
        assert!(
            words.contains("steps 20") && !words.contains("seed"),
            "{words}"
        );
        let none = serde_json::json!({"steps": 20, "start": {"kind": "none"}, "clip_start": false});
        assert_eq!(describe_settings(&none), "start none, steps 20");
        let aa = serde_json::json!({"version": "standard", "components": [
            {"name": "Square", "settings": {"queries": 5000, "rescale_schedule": false}}]});
        assert_eq!(
            describe_settings(&aa),
            "components Square: queries 5000, rescale_schedule false, version standard"
        );
        let mut report = Report::default();
        report
            .attack_settings
            .insert("PGD_TRADES".into(), words.clone());
        let md = markdown(&report);
        assert!(md.contains(&format!("| PGD_TRADES | {words} |")), "{md}");
    }
}
