//! Experiments and reports: the config format, a tiny grid end to end with resume, a known
//! results file rendered to the expected table, and sharded evaluation merged exactly.

mod common;

use common::*;
use rslad::attacks::{parse_list, AttackContext};
use rslad::data::{self, DatasetKind, Split};
use rslad::eval::{evaluate, EvalConfig, EvalResults};
use rslad::experiment::{self, ExperimentConfig};
use rslad::models::ModelSpec;
use rslad::report;
use rslad::train::Observer;
use std::path::Path;

#[derive(Default)]
struct Log(Vec<String>);

impl Observer for Log {
    fn message(&mut self, text: &str) {
        self.0.push(text.to_string());
    }
}

#[test]
fn unknown_keys_are_named() {
    let e = toml::from_str::<ExperimentConfig>(
        "dataset = 'cifar10'\nlearning_rate = 0.1\n[teacher]\nmodel = 'resnet18'\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("learning_rate"), "{e}");
    let e = toml::from_str::<ExperimentConfig>(
        "dataset = 'cifar10'\n[teacher]\nmodel = 'resnet18'\nsize = 3\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("size"), "{e}");
    // The example parses.
    let ok = "dataset = \"fashion-mnist\"\ntrain_limit = 500\ntest_limit = 200\nepochs = 1\neps = 0.1\n[teacher]\nmodel = \"cnn-small\"\nmethod = \"sat\"\n[[student]]\nmodel = \"cnn-small\"\nmethods = [\"natural\", \"rslad\"]\n";
    let cfg: ExperimentConfig = toml::from_str(ok).unwrap();
    let cells = cfg.cells(Path::new("/tmp/x")).unwrap();
    assert_eq!(
        cells.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        [
            "teacher-cnn-small-sat",
            "cnn-small-natural-s0",
            "cnn-small-rslad-s0"
        ]
    );
    assert_eq!(cfg.eps().unwrap(), 0.1);
    let frac: ExperimentConfig =
        toml::from_str(&ok.replace("eps = 0.1", "eps = \"8/255\"")).unwrap();
    assert!((frac.eps().unwrap() - 8.0 / 255.0).abs() < 1e-12);
}

#[test]
fn tiny_grid_runs_end_to_end_and_resumes() {
    let data = temp_dir("grid-data");
    fake_fashion(&data, 300, 60, true);
    let out = temp_dir("grid-out");
    let text = format!(
        "dataset = \"fashion-mnist\"\ndata_dir = \"{}\"\ntrain_limit = 300\ntest_limit = 60\nepochs = 1\neps = 0.1\n\
         batch_size = 32\nlr = 0.05\nmilestones = []\nattack_steps = 3\nmonitor_examples = 30\n\
         attacks = \"fgsm,pgd-sat\"\neval_examples = 40\neval_batch_size = 16\neps_sweep = 3\nsquare_queries = 20\n\
         [teacher]\nmodel = \"cnn-small\"\nmethod = \"sat\"\n[surrogate]\nmodel = \"cnn-small\"\nmethod = \"natural\"\n\
         [[student]]\nmodel = \"cnn-small\"\nmethods = [\"natural\", \"rslad\"]\n",
        data.display()
    );
    let cfg: ExperimentConfig = toml::from_str(&text).unwrap();
    let device = device();
    // A student before its teacher: a clear error.
    let cells = cfg.cells(&out).unwrap();
    let e = experiment::run(&cfg, &out, Some(3), &device, &mut Log::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("teacher"), "{e}");
    assert_eq!(cells.len(), 4);
    // The teacher before the surrogate: trained, then stopped before its black-box tables.
    let e = experiment::run(&cfg, &out, Some(1), &device, &mut Log::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("crafted on the surrogate") && e.contains("0 (surrogate-cnn-small-natural)"),
        "{e}"
    );
    assert!(experiment::cell_layout(&out, &cells[1]).best().is_file());
    experiment::run(&cfg, &out, None, &device, &mut Log::default()).unwrap();
    for c in &cells {
        assert!(experiment::is_finished(&cfg, &out, c), "{}", c.name);
    }
    let dir = experiment::cell_dir(&out, &cells[3]);
    for f in [
        "eval-best.json",
        "eval-last.json",
        "blackbox-best.json",
        "sweep.json",
        "metrics.jsonl",
    ] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    let stamp = std::fs::metadata(dir.join("eval-best.json"))
        .unwrap()
        .modified()
        .unwrap();
    // Finished cells are skipped.
    let mut log = Log::default();
    experiment::run(&cfg, &out, None, &device, &mut log).unwrap();
    assert_eq!(
        log.0.iter().filter(|m| m.contains("skipped")).count(),
        4,
        "{:?}",
        log.0
    );
    assert_eq!(
        std::fs::metadata(dir.join("eval-best.json"))
            .unwrap()
            .modified()
            .unwrap(),
        stamp
    );
    changed_surrogate_and_teacher_weights(&cfg, &out, &cells);
    // A half-done cell resumes: its missing evaluation is redone, its training is not.
    std::fs::remove_file(dir.join("eval-last.json")).unwrap();
    std::fs::remove_file(dir.join("cell.json")).unwrap();
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    experiment::run(&cfg, &out, Some(3), &device, &mut Log::default()).unwrap();
    assert!(dir.join("eval-last.json").is_file());
    assert_eq!(
        std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap(),
        metrics
    );
    evaluation_resumes_from_its_parts(&cfg, &out, &cells[3], &data);

    let rep = report::collect(std::slice::from_ref(&out)).unwrap();
    let files = report::write(&rep, &out).unwrap();
    for name in [
        "report.md",
        "results.csv",
        "results.json",
        "curves-cnn-small.svg",
        "eps-cnn-small.svg",
    ] {
        assert!(
            files.iter().any(|f| f.ends_with(name)),
            "{name} in {files:?}"
        );
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| cnn-small | rslad | best |"), "{md}");
    assert!(md.contains("Black-box"), "{md}");
    let svg = std::fs::read_to_string(out.join("curves-cnn-small.svg")).unwrap();
    assert!(
        svg.contains("epoch") && svg.contains("accuracy (%)") && svg.contains("rslad PGD-20"),
        "axes and legend"
    );
}

/// Transfer results record the surrogate's SHA-256. When the surrogate's weights change (here
/// the teacher's weights put in its place), every finished cell's black-box results are crafted
/// again on the new weights, and nothing else of those cells is recomputed. A replaced teacher
/// is refused.
fn changed_surrogate_and_teacher_weights(
    cfg: &ExperimentConfig,
    out: &Path,
    cells: &[experiment::Cell],
) {
    use rslad::train::layout::EvalFile;
    let surrogate = experiment::cell_layout(out, &cells[0]).best();
    let student = experiment::cell_layout(out, &cells[3]);
    let recorded = || -> Vec<String> {
        let r: EvalResults = serde_json::from_str(
            &std::fs::read_to_string(student.eval(EvalFile::BlackBoxBest)).unwrap(),
        )
        .unwrap();
        r.attacks
            .iter()
            .filter_map(|a| Some(a.settings.get("surrogate_sha256")?.as_str()?.to_string()))
            .collect()
    };
    let hash = |p: &Path| rslad::io::sha256_file(p).unwrap();
    assert_eq!(
        recorded(),
        vec![hash(&surrogate); 2],
        "Transfer-PGD and -CW"
    );
    let stamp = |f| {
        std::fs::metadata(student.eval(f))
            .unwrap()
            .modified()
            .unwrap()
    };
    let white_box = stamp(EvalFile::Best);
    std::fs::copy(experiment::cell_layout(out, &cells[1]).best(), &surrogate).unwrap();
    for c in &cells[1..] {
        assert_eq!(
            experiment::cell_state(cfg, out, c),
            experiment::CellState::Stale,
            "{}",
            c.name
        );
    }
    experiment::run(cfg, out, None, &device(), &mut Log::default()).unwrap();
    assert_eq!(recorded(), vec![hash(&surrogate); 2]);
    assert_eq!(stamp(EvalFile::Best), white_box, "white-box results kept");
    for c in cells {
        assert!(experiment::is_finished(cfg, out, c), "{}", c.name);
    }
    // Other weights in the teacher's place: the student that learned from it is a finished
    // cell of other settings (refused, never reused); the natural student is not affected.
    let teacher = experiment::cell_layout(out, &cells[1]).best();
    let weights = std::fs::read(&teacher).unwrap();
    std::fs::copy(experiment::cell_layout(out, &cells[2]).best(), &teacher).unwrap();
    let state = experiment::cell_state(cfg, out, &cells[3]);
    assert!(
        matches!(&state, experiment::CellState::Changed(w) if w.contains("teacher's weights")),
        "{state:?}"
    );
    assert!(experiment::is_finished(cfg, out, &cells[2]));
    let e = experiment::run(cfg, out, None, &device(), &mut Log::default()).unwrap_err();
    assert!(e.to_string().contains("teacher's weights"), "{e}");
    std::fs::write(&teacher, weights).unwrap();
    assert!(experiment::is_finished(cfg, out, &cells[3]));
}

/// A cell evaluates one batch of examples at a time (40 examples, batch 16: 3 parts) and keeps
/// each finished part, so a killed cell resumes its evaluation: the merged file equals one
/// unsplit evaluation, a finished part is reused (here a doctored one, to see it), a part left
/// by other weights is redone, and the parts are removed once the cell is finished.
fn evaluation_resumes_from_its_parts(
    cfg: &ExperimentConfig,
    out: &Path,
    cell: &experiment::Cell,
    data: &Path,
) {
    use rslad::eval::{evaluate_checkpoint, from_bits, EvalRequest, Shard};
    use rslad::train::layout::EvalFile;
    let layout = experiment::cell_layout(out, cell);
    assert!(!layout.parts().exists(), "parts are removed when merged");
    let read = |p: &Path| -> EvalResults {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let merged = read(&layout.eval(EvalFile::Best));
    let device = device();
    let request = |shard| EvalRequest {
        checkpoint: layout.best(),
        dataset: DatasetKind::FashionMnist,
        data_dir: Some(data.to_path_buf()),
        attacks: "fgsm,pgd-sat".into(),
        eps: 0.1,
        n_examples: Some(40),
        shard,
        batch_size: 40,
        seed: 0,
        sanity_checks: false,
    };
    let whole = evaluate_checkpoint(request(None), &device, &mut |_| {}).unwrap();
    assert_eq!(merged.example_ids, whole.example_ids);
    assert_eq!(merged.clean, whole.clean);
    for (a, b) in merged.attacks.iter().zip(&whole.attacks) {
        assert_eq!((&a.name, &a.robust), (&b.name, &b.robust));
    }

    std::fs::remove_file(layout.eval(EvalFile::Best)).unwrap();
    std::fs::remove_file(layout.cell_record()).unwrap();
    std::fs::create_dir_all(layout.parts()).unwrap();
    let first = Shard { index: 0, count: 3 };
    let mut doctored = evaluate_checkpoint(request(Some(first)), &device, &mut |_| {}).unwrap();
    let n0 = doctored.example_ids.len();
    assert_eq!(n0, 13);
    // The fake data is easy: the real outcomes are all 1, so the planted parts say 0.
    assert!(!whole.clean.contains('0'), "{}", whole.clean);
    doctored.clean = "0".repeat(n0);
    for a in &mut doctored.attacks {
        a.robust = "0".repeat(n0);
        for st in &mut a.stages {
            st.robust = "0".repeat(n0);
        }
    }
    let key = experiment::parts_key("fgsm,pgd-sat");
    let part = |k| layout.eval_part(EvalFile::Best, &key, k, 3);
    std::fs::write(part(0), serde_json::to_string(&doctored).unwrap()).unwrap();
    // The same outcomes filed under another attack list are never read for this one.
    let other = layout.eval_part(EvalFile::Best, &experiment::parts_key("fgsm"), 2, 3);
    let mut foreign = doctored.clone();
    foreign.example_ids = (26..40).collect();
    foreign.clean = "0".repeat(14);
    for a in &mut foreign.attacks {
        a.robust = "0".repeat(14);
        for st in &mut a.stages {
            st.robust = "0".repeat(14);
        }
    }
    std::fs::write(other, serde_json::to_string(&foreign).unwrap()).unwrap();
    let second = Shard { index: 1, count: 3 };
    let mut stale = evaluate_checkpoint(request(Some(second)), &device, &mut |_| {}).unwrap();
    stale.checkpoint_sha256 = Some("0".repeat(64));
    stale.clean = "0".repeat(stale.example_ids.len());
    std::fs::write(part(1), serde_json::to_string(&stale).unwrap()).unwrap();

    experiment::run(cfg, out, Some(cell.index), &device, &mut Log::default()).unwrap();
    let resumed = read(&layout.eval(EvalFile::Best));
    assert_eq!(resumed.clean[..n0], "0".repeat(n0), "part 0 was reused");
    assert_eq!(
        resumed.clean[n0..],
        whole.clean[n0..],
        "part 1 (other weights) and part 2 (other attacks) were redone"
    );
    for (a, b) in resumed.attacks.iter().zip(&whole.attacks) {
        assert!(from_bits(&a.robust[..n0]).iter().all(|&r| !r), "{}", a.name);
        assert_eq!(a.robust[n0..], b.robust[n0..], "{}", a.name);
    }
    assert!(experiment::is_finished(cfg, out, cell));
    assert!(!layout.parts().exists(), "parts are removed when merged");
}

fn fake_result(clean: &str, attacks: &[(&str, &str)]) -> EvalResults {
    let acc = |s: &str| s.chars().filter(|&c| c == '1').count() as f64 / s.len() as f64;
    EvalResults {
        model: ModelSpec::for_dataset("resnet18".parse().unwrap(), DatasetKind::Cifar10),
        checkpoint: None,
        checkpoint_sha256: None,
        dataset: "cifar10".into(),
        eps: 8.0 / 255.0,
        seed: 0,
        backend: "test".into(),
        example_ids: (0..clean.len() as u64).collect(),
        clean_accuracy: acc(clean),
        clean: clean.into(),
        attacks: attacks
            .iter()
            .map(|(n, bits)| rslad::eval::AttackResult {
                name: n.to_string(),
                black_box: false,
                robust_accuracy: acc(bits),
                robust: bits.to_string(),
                stages: vec![],
                settings: serde_json::json!({}),
                seconds: 0.0,
            })
            .collect(),
        warnings: vec![],
        seconds: 0.0,
        shard: None,
        data_sha256: None,
    }
}

/// A known small results folder renders to exactly this table, with the paper's quoted
/// numbers beside the matching cells.
#[test]
fn report_renders_known_results() {
    let out = temp_dir("report-known");
    for (name, method, clean, aa) in [
        ("resnet18-sat-s0", "sat", "11110", "10000"),
        ("resnet18-rslad-s0", "rslad", "11111", "11100"),
    ] {
        let dir = out.join("cells").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let cell = serde_json::json!({
            "cell": {"index": 0, "name": name, "role": "student", "model": "resnet18", "method": method, "seed": 0,
                     "checkpoint": null, "train": {}},
            "dataset": "cifar10", "eps": 8.0 / 255.0, "finished": true
        });
        std::fs::write(dir.join("cell.json"), cell.to_string()).unwrap();
        let r = fake_result(
            clean,
            &[
                ("FGSM", "11000"),
                ("PGD_SAT", "10000"),
                ("PGD_TRADES", "11000"),
                ("CW", "10000"),
                ("AA", aa),
            ],
        );
        std::fs::write(
            dir.join("eval-best.json"),
            serde_json::to_string(&r).unwrap(),
        )
        .unwrap();
    }
    let rep = report::collect(std::slice::from_ref(&out)).unwrap();
    let md = report::markdown(&rep);
    let expected = "\
| model | method | checkpoint | Clean | FGSM | PGD_SAT | PGD_TRADES | CW | AA |
|---|---|---|---|---|---|---|---|---|
| resnet18 | rslad | best | 100.00 (83.38) | 40.00 | 20.00 | 40.00 (55.94) | 20.00 | 60.00 (51.49) |
| resnet18 | sat | best | 80.00 (83.38) | 40.00 | 20.00 | 40.00 | 20.00 | 20.00 (45.83) |
";
    assert!(md.contains(expected), "{md}");
    let csv = report::csv(&rep);
    assert!(
        csv.contains("white_box,student,resnet18,rslad,best,0,cifar10,"),
        "{csv}"
    );
}

/// Two shards of an evaluation merge into exactly the unsharded result.
#[test]
fn sharded_evaluation_merges_exactly() {
    let data_dir = temp_dir("shards");
    fake_fashion(&data_dir, 10, 64, false);
    let device = device();
    device.seed(4);
    let spec = ModelSpec::for_dataset("cnn-small".parse().unwrap(), DatasetKind::FashionMnist);
    let model = spec.build(&device).unwrap();
    let test = data::load(
        DatasetKind::FashionMnist,
        Some(&data_dir),
        Split::Test,
        None,
    )
    .unwrap();
    let ctx = AttackContext {
        eps: 0.1,
        seed: 3,
        device: &device,
        target: &spec,
    };
    let attacks = parse_list("fgsm,pgd-sat,square:queries=30,aa:steps=5:queries=20", &ctx).unwrap();
    let cfg = EvalConfig {
        eps: 0.1,
        batch_size: 16,
        seed: 3,
        sanity_checks: false,
    };
    let whole = evaluate(
        &model,
        test.clone(),
        0,
        &attacks,
        &cfg,
        &device,
        &mut |_| {},
    );
    let a = evaluate(
        &model,
        test.slice(0, 32),
        0,
        &attacks,
        &cfg,
        &device,
        &mut |_| {},
    );
    let b = evaluate(
        &model,
        test.slice(32, 64),
        32,
        &attacks,
        &cfg,
        &device,
        &mut |_| {},
    );
    let merged = rslad::eval::merge_shards(vec![b, a]).unwrap();
    assert_eq!(merged.example_ids, whole.example_ids);
    assert_eq!(merged.clean, whole.clean);
    for (m, w) in merged.attacks.iter().zip(&whole.attacks) {
        assert_eq!(
            (&m.name, &m.robust, m.robust_accuracy),
            (&w.name, &w.robust, w.robust_accuracy)
        );
        assert_eq!(m.stages, w.stages);
    }
    assert!(
        whole
            .attacks
            .iter()
            .any(|a| a.robust.contains('1') && a.robust.contains('0'))
            || whole.clean.contains('0')
    );
    // Shards of different evaluations are refused.
    let other = evaluate(
        &model,
        test.slice(32, 64),
        32,
        &attacks[..1],
        &cfg,
        &device,
        &mut |_| {},
    );
    assert!(rslad::eval::merge_shards(vec![whole.clone(), other]).is_err());
}

/// The claim experiment's grid: the teacher on its own longer schedule, every student method
/// (both KL reductions of ARD and RSLAD) at three seeds on the students' schedule.
#[test]
fn claim_config_lists_its_grid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/fashion-mnist-claim.toml");
    let cfg = ExperimentConfig::from_file(&path).unwrap();
    let cells = cfg.cells(Path::new("/tmp/claim")).unwrap();
    assert_eq!(cells.len(), 2 + 8 * 3);
    let teacher = cells
        .iter()
        .find(|c| c.name == "teacher-cnn-large-sat")
        .unwrap();
    assert_eq!(teacher.train.epochs, Some(18));
    assert_eq!(teacher.train.milestones, Some(vec![12, 15]));
    let students: Vec<_> = cells
        .iter()
        .filter(|c| c.role == experiment::Role::Student)
        .collect();
    assert_eq!(students.len(), 24);
    for s in &students {
        assert_eq!(s.train.epochs, Some(6), "{}", s.name);
        assert_eq!(s.train.milestones, Some(vec![4, 5]), "{}", s.name);
        assert_eq!(s.train.train_limit, Some(10000), "{}", s.name);
        assert_eq!(s.model, "cnn-small");
    }
    for seed in 0..3 {
        let c = cells
            .iter()
            .find(|c| c.name == format!("cnn-small-rslad-batchmean-s{seed}"))
            .unwrap();
        assert_eq!(c.method, "rslad");
        assert_eq!(
            c.train.kl_reduction.map(|r| r.to_string()).as_deref(),
            Some("batchmean")
        );
        assert!(c.train.teacher.is_some());
        let a = cells
            .iter()
            .find(|c| c.name == format!("cnn-small-ard-batchmean-s{seed}"))
            .unwrap();
        assert_eq!(
            a.train.kl_reduction.map(|r| r.to_string()).as_deref(),
            Some("batchmean")
        );
    }
    assert_eq!(cfg.eval_last, Some(false));
    assert_eq!(cfg.blackbox_seeds, Some(vec![0]));
    assert_eq!(cfg.eval_examples, Some(1000));
}

/// The teacher's own keys win over `[methods.sat]` (a SAT teacher is not a SAT student), and
/// grid mistakes are named before anything trains.
#[test]
fn teacher_schedule_and_grid_errors() {
    let base = "dataset = \"fashion-mnist\"\nepochs = 6\nseeds = [0, 1]\nmilestones = [4, 5]\n\
                [teacher]\nmodel = \"cnn-large\"\nmethod = \"sat\"\nepochs = 18\nlr = 0.02\nmilestones = [12, 15]\n\
                [[student]]\nmodel = \"cnn-small\"\nmethods = [\"sat\", \"rslad:batchmean\"]\n\
                [methods.sat]\nepochs = 7\nlr = 0.3\n";
    let cfg: ExperimentConfig = toml::from_str(base).unwrap();
    let cells = cfg.cells(Path::new("/tmp/x")).unwrap();
    let t = &cells[0].train;
    assert_eq!((t.epochs, t.lr), (Some(18), Some(0.02)));
    assert_eq!(t.milestones, Some(vec![12, 15]));
    let s = cells.iter().find(|c| c.name == "cnn-small-sat-s1").unwrap();
    assert_eq!((s.train.epochs, s.train.lr), (Some(7), Some(0.3)));
    assert_eq!(s.train.milestones, Some(vec![4, 5]));
    for (bad, needle) in [
        ("\"rslad:batchmean\"", "\"iad:batchmean\""),
        ("\"rslad:batchmean\"", "\"rslad:sum\""),
    ] {
        let cfg: ExperimentConfig = toml::from_str(&base.replace(bad, needle)).unwrap();
        let e = cfg.cells(Path::new("/tmp/x")).unwrap_err();
        assert!(e.to_string().contains(needle.trim_matches('"')), "{e}");
    }
    let cfg: ExperimentConfig =
        toml::from_str(&base.replace("seeds = [0, 1]", "seeds = [0, 1]\nblackbox_seeds = [2]"))
            .unwrap();
    let e = cfg.cells(Path::new("/tmp/x")).unwrap_err();
    assert!(e.to_string().contains("blackbox_seeds"), "{e}");
}

/// `--jobs 2` runs the cells in two child processes, the surrogate and the teacher before the
/// students, each with its own log; a failed teacher stops the students from starting and
/// the exit status says so.
#[test]
fn cells_run_in_parallel_processes() {
    let data = temp_dir("jobs-data");
    fake_fashion(&data, 64, 32, false);
    let root = temp_dir("jobs");
    let config = root.join("grid.toml");
    let text = |teacher: &str| {
        format!(
            "dataset = \"fashion-mnist\"\ndata_dir = \"{}\"\ntrain_limit = 64\ntest_limit = 32\n\
             epochs = 1\neps = 0.1\nseeds = [0, 1]\nbatch_size = 32\nmilestones = []\n\
             attack_steps = 2\nmonitor_examples = 16\nattacks = \"fgsm\"\neval_examples = 16\n\
             eps_sweep = 0\nsquare_queries = 5\n[teacher]\nmodel = \"cnn-small\"\n\
             method = \"natural\"\n{teacher}[surrogate]\nmodel = \"cnn-small\"\n\
             method = \"natural\"\n[[student]]\nmodel = \"cnn-small\"\nmethods = [\"natural\"]\n",
            data.display()
        )
    };
    std::fs::write(&config, text("")).unwrap();
    let out = root.join("out");
    let args = |out: &Path| {
        vec![
            "experiment".to_string(),
            "--config".into(),
            config.display().to_string(),
            "--out".into(),
            out.display().to_string(),
            "--jobs".into(),
            "2".into(),
        ]
    };
    let run = |out: &Path| {
        let a = args(out);
        rslad(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let (code, _, err) = run(&out);
    assert_eq!(code, 0, "{err}");
    let cfg = ExperimentConfig::from_file(&config).unwrap();
    let cells = cfg.cells(&out).unwrap();
    assert_eq!(cells.len(), 4);
    for c in &cells {
        assert!(experiment::is_finished(&cfg, &out, c), "{}: {err}", c.name);
        assert!(
            err.contains(&format!("cell {} ({}) finished", c.index, c.name)),
            "{err}"
        );
        let log = std::fs::read_to_string(out.join("logs").join(format!("{}.log", c.name)));
        assert!(log.is_ok_and(|l| !l.is_empty()), "{}", c.name);
    }
    // The students start only once the surrogate and the teacher have finished.
    let at = |what: &str, c: &experiment::Cell| {
        err.find(&format!("cell {} ({}) {what}", c.index, c.name))
            .unwrap()
    };
    let last_first_phase = cells[..2].iter().map(|c| at("finished", c)).max();
    let first_student = cells[2..].iter().map(|c| at("started", c)).min();
    assert!(last_first_phase < first_student, "{err}");
    // A damaged results file makes its cell unfinished; running again evaluates it again
    // (the training is kept).
    let student = &cells[2];
    let results = out.join("cells").join(&student.name).join("eval-best.json");
    std::fs::write(&results, b"{").unwrap();
    assert!(!experiment::is_finished(&cfg, &out, student));
    // While another process holds the cell, it is not run twice.
    let lock = out.join("cells").join(&student.name).join("cell.lock");
    let held = rslad::io::try_lock(&lock).unwrap().unwrap();
    let (code, _, err) = rslad(&[
        "experiment",
        "--config",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--cell",
        &student.index.to_string(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("being run by another rslad process"), "{err}");
    drop(held);
    let (code, _, err) = run(&out);
    assert_eq!(code, 0, "{err}");
    assert!(experiment::is_finished(&cfg, &out, student), "{err}");
    assert!(std::fs::read_to_string(&results)
        .unwrap()
        .contains("example_ids"));

    // A teacher that cannot be read fails before any cell starts.
    let bad = root.join("teacher.safetensors");
    std::fs::write(&bad, b"not a checkpoint").unwrap();
    std::fs::write(
        &config,
        text(&format!("checkpoint = \"{}\"\n", bad.display())),
    )
    .unwrap();
    let (code, _, err) = run(&root.join("out-bad"));
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("teacher.safetensors") && err.contains("not a valid safetensors"),
        "{err}"
    );
    assert!(!err.contains(") started"), "{err}");
}

/// An attack list that does not parse, or a given checkpoint that is missing, stops the
/// experiment before any cell trains or anything is written.
#[test]
fn attack_lists_and_given_checkpoints_are_checked_before_training() {
    let base = "dataset = \"fashion-mnist\"\ndata_dir = \"/nonexistent\"\nepochs = 1\n\
                attacks = \"pgd-sat,aa\"\n[teacher]\nmodel = \"cnn-small\"\nmethod = \"sat\"\n\
                [[student]]\nmodel = \"cnn-small\"\nmethods = [\"rslad\"]\n";
    for (text, needle) in [
        (base.replace("pgd-sat,aa", "pgd-sat,aa:stepz=3"), "stepz"),
        (base.replace("pgd-sat,aa", "pgd-sat,pgd:steps=0"), "steps"),
        (
            base.replace(
                "method = \"sat\"\n",
                "method = \"sat\"\ncheckpoint = \"/nonexistent/teacher.safetensors\"\n",
            ),
            "/nonexistent/teacher.safetensors",
        ),
    ] {
        let cfg: ExperimentConfig = toml::from_str(&text).unwrap();
        let out = temp_dir("experiment-prechecks");
        let e = experiment::run(&cfg, &out, None, &device(), &mut Log::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{e}");
        assert!(!out.join("experiment.toml").exists(), "{e}");
    }
    // A given teacher checkpoint of another model than [teacher] names is refused before any
    // cell runs (it would be evaluated and reported as the named model), also by --list-cells.
    let dir = temp_dir("experiment-given-model");
    let small = dir.join("small.safetensors");
    let d = device();
    let m = ModelSpec::for_dataset("cnn-small".parse().unwrap(), DatasetKind::FashionMnist)
        .build(&d)
        .unwrap();
    rslad::models::save_model(&m, &small, &[]).unwrap();
    let text = base.replace(
        "model = \"cnn-small\"\nmethod = \"sat\"\n",
        &format!(
            "model = \"cnn-large\"\nmethod = \"sat\"\ncheckpoint = \"{}\"\n",
            small.display()
        ),
    );
    let cfg: ExperimentConfig = toml::from_str(&text).unwrap();
    let out = dir.join("out");
    let e = experiment::run(&cfg, &out, None, &d, &mut Log::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("cnn-small") && e.contains("cnn-large"), "{e}");
    assert!(!out.join("cells").exists(), "{e}");
    let file = dir.join("exp.toml");
    std::fs::write(&file, &text).unwrap();
    let (code, _, err) = rslad(&[
        "experiment",
        "--config",
        file.to_str().unwrap(),
        "--list-cells",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cnn-large"), "{err}");
}

/// Settings that would silently mean something else are refused with their key's name.
#[test]
fn empty_grid_settings_are_refused() {
    let base = "dataset = \"fashion-mnist\"\nepochs = 1\n[teacher]\nmodel = \"cnn-small\"\n\
                [[student]]\nmodel = \"cnn-small\"\nmethods = [\"natural\"]\n";
    for (text, needle) in [
        (format!("seeds = []\n{base}"), "seeds = []"),
        (base.replace("[\"natural\"]", "[]"), "methods = []"),
        (format!("eps_sweep = 1\n{base}"), "eps_sweep = 1"),
    ] {
        let cfg: ExperimentConfig = toml::from_str(&text).unwrap();
        let e = cfg.cells(Path::new("/tmp/unused")).unwrap_err().to_string();
        assert!(e.contains(needle), "{e}");
    }
    // One model under two spellings is one model listed twice.
    let twice = format!("{base}[[student]]\nmodel = \"CNN-Small\"\nmethods = [\"natural\"]\n");
    let cfg: ExperimentConfig = toml::from_str(&twice).unwrap();
    let e = cfg.cells(Path::new("/tmp/unused")).unwrap_err().to_string();
    assert!(e.contains("two spellings"), "{e}");
    // Leaving seeds out still means seed 0.
    let cfg: ExperimentConfig = toml::from_str(base).unwrap();
    let cells = cfg.cells(Path::new("/tmp/unused")).unwrap();
    assert_eq!(cells[1].seed, 0);
    // An empty attack list is refused (`none` asks for clean accuracy only).
    let cfg: ExperimentConfig = toml::from_str(&format!("attacks = \"\"\n{base}")).unwrap();
    let out = temp_dir("experiment-empty-attacks");
    let e = experiment::run(&cfg, &out, None, &device(), &mut Log::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("names no attack"), "{e}");
}

/// One report covers one dataset and one eps: folders of another are refused, never merged
/// into its tables or paired comparisons. Columns of attacks outside the paper's set are shown.
#[test]
fn report_refuses_mixed_settings_and_shows_every_column() {
    let root = temp_dir("report-mixed");
    let (a, b) = (root.join("a"), root.join("b"));
    let r = fake_result("1100", &[("AA", "1000"), ("PGD-3", "1100")]);
    write_cell(
        &a,
        "resnet18-sat-s0",
        "student",
        "sat",
        0,
        "eval-best.json",
        &r,
    );
    // A record that spells the dataset as an experiment file may (`cifar-10`) is the same.
    let record = a.join("cells").join("resnet18-sat-s0").join("cell.json");
    let text = std::fs::read_to_string(&record).unwrap();
    std::fs::write(&record, text.replace("\"cifar10\"", "\"cifar-10\"")).unwrap();
    let rep = report::collect(std::slice::from_ref(&a)).unwrap();
    let md = report::markdown(&rep);
    assert!(md.contains("| AA | PGD-3 |"), "{md}");
    assert!(md.contains("| 25.00 (45.83) | 50.00 |"), "{md}");
    // A seed without an attack's result: that column is over the other seeds, and said so.
    let mut clean_only = r.clone();
    clean_only.attacks.clear();
    write_cell(
        &a,
        "resnet18-sat-s1",
        "student",
        "sat",
        1,
        "eval-best.json",
        &clean_only,
    );
    let rep = report::collect(std::slice::from_ref(&a)).unwrap();
    assert!(
        rep.warnings
            .iter()
            .any(|w| w.contains("seeds [1] have no AA result")),
        "{:?}",
        rep.warnings
    );
    std::fs::remove_dir_all(a.join("cells/resnet18-sat-s1")).unwrap();
    let write_b = |r: &EvalResults| {
        write_cell(
            &b,
            "resnet18-rslad-s0",
            "student",
            "rslad",
            0,
            "eval-best.json",
            r,
        )
    };
    let mut other = r.clone();
    other.eps = 4.0 / 255.0;
    write_b(&other);
    let e = report::collect(&[a.clone(), b.clone()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("eps") && e.contains("separately"), "{e}");
    other.eps = r.eps;
    other.dataset = "cifar100".into();
    write_b(&other);
    let e = report::collect(&[a.clone(), b.clone()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("cifar100") && e.contains("separately"), "{e}");
    // The same dataset and eps on other test images cannot be paired either.
    let (mut a_img, mut b_img) = (r.clone(), r.clone());
    a_img.data_sha256 = Some("a".repeat(64));
    b_img.data_sha256 = Some("b".repeat(64));
    let c = root.join("c");
    write_cell(
        &c,
        "resnet18-sat-s0",
        "student",
        "sat",
        0,
        "eval-best.json",
        &a_img,
    );
    write_cell(
        &c,
        "resnet18-rslad-s0",
        "student",
        "rslad",
        0,
        "eval-best.json",
        &b_img,
    );
    let e = report::collect(std::slice::from_ref(&c))
        .unwrap_err()
        .to_string();
    assert!(e.contains("other test images"), "{e}");
    // The same cell (model, method, seed) in both folders: the second is not just dropped.
    write_cell(
        &b,
        "resnet18-sat-s0",
        "student",
        "sat",
        0,
        "eval-best.json",
        &other,
    );
    let e = report::collect(&[a, b]).unwrap_err().to_string();
    assert!(e.contains("cifar100"), "{e}");
}

fn write_cell(
    out: &Path,
    name: &str,
    role: &str,
    method: &str,
    seed: u64,
    file: &str,
    r: &EvalResults,
) {
    let (method, reduction) = match method.split_once(':') {
        Some((m, r)) => (m, Some(r)),
        None => (method, None),
    };
    let dir = out.join("cells").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let cell = serde_json::json!({
        "cell": {"index": 0, "name": name, "role": role, "model": "resnet18", "method": method,
                 "seed": seed, "checkpoint": null, "train": {"kl_reduction": reduction}},
        "dataset": r.dataset, "eps": r.eps, "finished": true
    });
    std::fs::write(dir.join("cell.json"), cell.to_string()).unwrap();
    std::fs::write(dir.join(file), serde_json::to_string(r).unwrap()).unwrap();
}

fn assert_close_pairs(got: &[(u64, f64)], want: &[(u64, f64)]) {
    assert_eq!(got.len(), want.len(), "{got:?}");
    for (g, w) in got.iter().zip(want) {
        assert!(
            g.0 == w.0 && (g.1 - w.1).abs() < 1e-12,
            "{got:?} vs {want:?}"
        );
    }
}

/// Known outcomes over two seeds: mean ± sample std per group, black-box rows counting only
/// the seeds that have them, the paired comparisons and the teacher's margin.
#[test]
fn report_statistics_from_known_results() {
    let out = temp_dir("report-stats");
    let n = 40;
    let bits =
        |ones: usize| -> String { (0..n).map(|i| if i < ones { '1' } else { '0' }).collect() };
    // AA: SAT 8/40 and 16/40 (20% and 40%), RSLAD 30/40 on both seeds, teacher 10/40.
    for (seed, sat_aa) in [(0u64, 8), (1, 16)] {
        let sat = fake_result(&bits(36), &[("AA", &bits(sat_aa))]);
        write_cell(
            &out,
            &format!("resnet18-sat-s{seed}"),
            "student",
            "sat",
            seed,
            "eval-best.json",
            &sat,
        );
        let rslad = fake_result(&bits(36), &[("AA", &bits(30))]);
        write_cell(
            &out,
            &format!("resnet18-rslad-batchmean-s{seed}"),
            "student",
            "rslad:batchmean",
            seed,
            "eval-best.json",
            &rslad,
        );
        write_cell(
            &out,
            &format!("resnet18-rslad-s{seed}"),
            "student",
            "rslad",
            seed,
            "eval-best.json",
            &rslad,
        );
    }
    // IAD has finished seeds 1 and 2 only: RSLAD is compared with it on seed 1, the seed both
    // have (RSLAD's s1 30/40 against IAD's 12/40).
    for seed in [1u64, 2] {
        let iad = fake_result(&bits(36), &[("AA", &bits(12))]);
        write_cell(
            &out,
            &format!("resnet18-iad-s{seed}"),
            "student",
            "iad",
            seed,
            "eval-best.json",
            &iad,
        );
    }
    let teacher = fake_result(&bits(38), &[("AA", &bits(10))]);
    write_cell(
        &out,
        "teacher-resnet18-sat",
        "teacher",
        "sat",
        0,
        "eval-best.json",
        &teacher,
    );
    // Black-box results on seed 0 only.
    let bb = fake_result(&bits(36), &[("Square", &bits(20))]);
    std::fs::write(
        out.join("cells/resnet18-sat-s0/blackbox-best.json"),
        serde_json::to_string(&bb).unwrap(),
    )
    .unwrap();
    // A copy of a cell inside cells/ is left out, not counted as a third SAT seed.
    let copy = out.join("cells/resnet18-sat-s0.bak");
    std::fs::create_dir_all(&copy).unwrap();
    for f in ["cell.json", "eval-best.json"] {
        std::fs::copy(out.join("cells/resnet18-sat-s0").join(f), copy.join(f)).unwrap();
    }
    let rep = report::collect(std::slice::from_ref(&out)).unwrap();
    assert!(
        rep.warnings
            .iter()
            .any(|w| w.contains("resnet18-sat-s0.bak: holds the results of cell resnet18-sat-s0")),
        "{:?}",
        rep.warnings
    );
    let md = report::markdown(&rep);
    // Sample standard deviation of 20 and 40: 14.14 (the population form would give 10).
    assert!(
        md.contains("| resnet18 | sat | best | 90.00 ± 0.00 (83.38) | – | – | – | – | 30.00 ± 14.14 (45.83) |"),
        "{md}"
    );
    let bb_row = rep.black_box.iter().find(|r| r.method == "sat").unwrap();
    assert_eq!(bb_row.seeds, vec![0]);
    assert!(
        md.contains("| resnet18 | sat | 90.00 (83.38) | – | – | 50.00 |"),
        "{md}"
    );
    let c = rep
        .comparisons
        .iter()
        .find(|c| c.method == "rslad:batchmean" && c.against == "sat" && c.column == "AA")
        .unwrap();
    assert!((c.interval.difference - 0.45).abs() < 1e-12, "{c:?}");
    assert_close_pairs(&c.per_seed, &[(0, 0.55), (1, 0.35)]);
    assert_eq!(c.verdict, "better");
    let iad = rep
        .comparisons
        .iter()
        .find(|c| c.method == "rslad" && c.against == "iad" && c.column == "AA")
        .unwrap();
    assert_eq!(iad.seeds, vec![1]);
    assert!((iad.interval.difference - 0.45).abs() < 1e-12, "{iad:?}");
    assert_close_pairs(&iad.per_seed, &[(1, 0.45)]);
    assert!(
        rep.warnings
            .iter()
            .any(|w| w.contains("resnet18 rslad against iad: compared on seeds [1] only")),
        "{:?}",
        rep.warnings
    );
    let clean = rep
        .comparisons
        .iter()
        .find(|c| c.method == "rslad:batchmean" && c.against == "sat" && c.column == "Clean")
        .unwrap();
    assert_eq!(clean.verdict, "no evidence either way");
    // The two RSLAD variants are compared once (Clean and AA), not in both directions.
    let variants: Vec<_> = rep
        .comparisons
        .iter()
        .filter(|c| c.method.starts_with("rslad") && c.against.starts_with("rslad"))
        .map(|c| (c.method.as_str(), c.against.as_str(), c.column.as_str()))
        .collect();
    assert_eq!(
        variants,
        [
            ("rslad", "rslad:batchmean", "Clean"),
            ("rslad", "rslad:batchmean", "AA")
        ]
    );
    let m = rep
        .teacher_margin
        .iter()
        .find(|m| m.column == "AA")
        .unwrap();
    assert!((m.interval.difference + 0.05).abs() < 1e-12, "{m:?}");
    assert_close_pairs(&m.per_seed, &[(0, 0.05), (1, -0.15)]);
    assert!(
        rep.warnings
            .iter()
            .any(|w| w.contains("resnet18 teacher is -5.00 AA points above the resnet18 SAT")),
        "{:?}",
        rep.warnings
    );
    assert!(
        md.contains("## The teacher's margin over the SAT student"),
        "{md}"
    );
    assert!(
        md.contains(
            "**The premise fails**: the resnet18 teacher is -5.00 AA points above the resnet18 \
             SAT student"
        ),
        "{md}"
    );
    assert!(
        md.contains("| resnet18 | rslad:batchmean | sat | AA | 2 | 75.00 | 30.00 | +45.00 |"),
        "{md}"
    );
}

/// `eval_last = false` attacks only the best checkpoint; `blackbox_seeds` limits the black-box
/// table to the seeds it names (the teacher keeps its own); a report made half way names the
/// cells not finished.
#[test]
fn best_only_and_blackbox_seeds_are_honoured() {
    let data = temp_dir("claim-grid-data");
    fake_fashion(&data, 64, 32, false);
    let out = temp_dir("claim-grid-out");
    let text = format!(
        "dataset = \"fashion-mnist\"\ndata_dir = \"{}\"\ntrain_limit = 64\ntest_limit = 32\nepochs = 1\neps = 0.1\n\
         seeds = [0, 1]\nbatch_size = 32\nmilestones = []\nattack_steps = 2\nmonitor_examples = 16\n\
         attacks = \"fgsm\"\neval_examples = 40\neval_last = false\nblackbox_seeds = [0]\neps_sweep = 0\nsquare_queries = 5\n\
         [teacher]\nmodel = \"cnn-small\"\nmethod = \"natural\"\n[surrogate]\nmodel = \"cnn-small\"\nmethod = \"natural\"\n\
         [[student]]\nmodel = \"cnn-small\"\nmethods = [\"natural\"]\n",
        data.display()
    );
    let cfg: ExperimentConfig = toml::from_str(&text).unwrap();
    let names: Vec<String> = cfg
        .cells(&out)
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    // A report on a running experiment names the cells it lacks.
    for cell in 0..3 {
        experiment::run(&cfg, &out, Some(cell), &device(), &mut Log::default()).unwrap();
    }
    let rep = report::collect(std::slice::from_ref(&out)).unwrap();
    assert_eq!(rep.grid_cells, 4);
    assert_eq!(rep.unfinished, [names[3].clone()]);
    let md = report::markdown(&rep);
    assert!(
        md.contains(&format!("**Not finished: 1 of 4 cells** ({})", names[3])),
        "{md}"
    );
    assert!(
        md.contains("## White-box robustness (best checkpoint)"),
        "{md}"
    );
    let mut log = Log::default();
    experiment::run(&cfg, &out, None, &device(), &mut log).unwrap();
    // eval_examples = 40 of a 32-image test set: the 32 are evaluated, and said so.
    assert!(
        log.0
            .iter()
            .any(|m| m.contains("the test set has 32 images, fewer than eval_examples = 40")),
        "{:?}",
        log.0
    );
    let rep = report::collect(std::slice::from_ref(&out)).unwrap();
    assert!(rep.unfinished.is_empty(), "{:?}", rep.unfinished);
    assert_eq!(rep.white_box[0].n_examples, 32);
    // Results shared without their weights are finished results, not cells to do.
    let shared = out.join("cells/cnn-small-natural-s0/best.safetensors");
    let weights = std::fs::read(&shared).unwrap();
    std::fs::remove_file(&shared).unwrap();
    let without = report::collect(std::slice::from_ref(&out)).unwrap();
    assert!(without.unfinished.is_empty(), "{:?}", without.unfinished);
    std::fs::write(&shared, weights).unwrap();
    assert!(!report::markdown(&rep).contains("Not finished"));
    let cells = out.join("cells");
    for (name, blackbox) in [
        ("teacher-cnn-small-natural", true),
        ("cnn-small-natural-s0", true),
        ("cnn-small-natural-s1", false),
    ] {
        assert!(cells.join(name).join("eval-best.json").is_file(), "{name}");
        assert!(!cells.join(name).join("eval-last.json").exists(), "{name}");
        assert_eq!(
            cells.join(name).join("blackbox-best.json").is_file(),
            blackbox,
            "{name}"
        );
    }
    // Results of other weights are computed again: s1's cell is reopened with results that
    // name other weights (as after retraining).
    let s1 = cells.join("cnn-small-natural-s1");
    let read = || -> EvalResults {
        serde_json::from_str(&std::fs::read_to_string(s1.join("eval-best.json")).unwrap()).unwrap()
    };
    let mut stale = read();
    stale.checkpoint_sha256 = Some("0".repeat(64));
    std::fs::write(
        s1.join("eval-best.json"),
        serde_json::to_string(&stale).unwrap(),
    )
    .unwrap();
    // The report leaves them out too, and says why.
    let rep = report::collect(std::slice::from_ref(&out)).unwrap();
    assert!(
        rep.warnings
            .iter()
            .any(|w| w.contains("computed on other weights")),
        "{:?}",
        rep.warnings
    );
    let student = rep.white_box.iter().find(|r| r.role == "student").unwrap();
    assert_eq!(student.seeds, vec![0]);
    std::fs::remove_file(s1.join("cell.json")).unwrap();
    let s1_cell = cfg.cells(&out).unwrap().pop().unwrap();
    assert_eq!(s1_cell.name, "cnn-small-natural-s1");
    assert_eq!(
        experiment::progress(&out, &s1_cell).as_deref(),
        Some("trained; evaluation left")
    );
    // Trained under other settings than the file gives now: the cell's folder is named, with
    // what changed (not `rslad train --resume`, which is no advice for a cell).
    let other_lr: ExperimentConfig =
        toml::from_str(&text.replace("batch_size = 32", "batch_size = 32\nlr = 0.05")).unwrap();
    let e = experiment::run(
        &other_lr,
        &out,
        Some(s1_cell.index),
        &device(),
        &mut Log::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("holds its training under other settings") && e.contains("lr: "),
        "{e}"
    );
    assert!(!e.contains("--resume"), "{e}");
    experiment::run(&cfg, &out, None, &device(), &mut Log::default()).unwrap();
    assert_eq!(
        read().checkpoint_sha256.unwrap(),
        rslad::io::sha256_file(&s1.join("best.safetensors")).unwrap()
    );
    // A finished cell whose settings changed is neither reused nor retrained: the run stops
    // before any cell, names the setting, and the report warns.
    let teacher_weights = std::fs::read(cells.join("teacher-cnn-small-natural/best.safetensors"));
    let longer: ExperimentConfig =
        toml::from_str(&text.replace("[teacher]\n", "[teacher]\nepochs = 2\n")).unwrap();
    let e = experiment::run(&longer, &out, None, &device(), &mut Log::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("teacher-cnn-small-natural finished with other settings")
            && e.contains("train.epochs: 1 -> 2"),
        "{e}"
    );
    assert_eq!(
        std::fs::read(cells.join("teacher-cnn-small-natural/best.safetensors")).unwrap(),
        teacher_weights.unwrap()
    );
    let state = experiment::cell_state(&longer, &out, &longer.cells(&out).unwrap()[1]);
    assert!(
        matches!(&state, experiment::CellState::Changed(w) if w == "train.epochs: 1 -> 2"),
        "{state:?}"
    );
    // The refused run recorded nothing; a record edited by hand is warned about.
    let recorded = std::fs::read_to_string(out.join("experiment.toml")).unwrap();
    assert_eq!(recorded, toml::to_string(&cfg).unwrap());
    std::fs::write(
        out.join("experiment.toml"),
        toml::to_string(&longer).unwrap(),
    )
    .unwrap();
    let rep = report::collect(std::slice::from_ref(&out)).unwrap();
    assert!(
        rep.warnings
            .iter()
            .any(|w| w.contains("cell teacher-cnn-small-natural finished with other settings")),
        "{:?}",
        rep.warnings
    );
    // A seed taken out of the experiment file is out of the report, and said so.
    let one_seed: ExperimentConfig =
        toml::from_str(&text.replace("seeds = [0, 1]", "seeds = [0]")).unwrap();
    std::fs::write(
        out.join("experiment.toml"),
        toml::to_string(&one_seed).unwrap(),
    )
    .unwrap();
    let rep = report::collect(std::slice::from_ref(&out)).unwrap();
    let student = rep.white_box.iter().find(|r| r.role == "student").unwrap();
    assert_eq!(student.seeds, vec![0]);
    assert!(
        rep.warnings
            .iter()
            .any(|w| w.contains("cell cnn-small-natural-s1 is not in the grid")),
        "{:?}",
        rep.warnings
    );
}

/// An experiment folder never mixes what it should not: a student never distills an
/// unfinished teacher, changed evaluation settings are refused rather than silently not
/// applied, a damaged sweep is computed again, evaluation parts of other test images are not
/// reused, other training or test images under finished cells are refused, and names and
/// paths that would split or break the grid are refused or made one.
#[test]
fn experiment_folders_are_never_silently_mixed() {
    use rslad::train::layout::EvalFile;
    let root = temp_dir("never-mixed");
    let (data_a, data_b) = (root.join("data-a"), root.join("data-b"));
    std::fs::create_dir_all(&data_a).unwrap();
    std::fs::create_dir_all(&data_b).unwrap();
    fake_fashion(&data_a, 64, 16, false);
    // Other training images shift the generator: other test images under the same ids.
    fake_fashion(&data_b, 80, 16, false);
    let text = |data: &Path, extra: &str, teacher: &str| {
        format!(
            "dataset = \"fashion-mnist\"\ndata_dir = \"{}\"\ntrain_limit = 64\ntest_limit = 16\n\
             epochs = 1\neps = 0.1\nbatch_size = 32\nmilestones = []\nattack_steps = 2\n\
             monitor_examples = 8\nattacks = \"fgsm\"\neval_examples = 16\neval_batch_size = 8\n\
             eps_sweep = 2\n{extra}[teacher]\nmodel = \"CNN-Small\"\nmethod = \"natural\"\n\
             {teacher}[[student]]\nmodel = \"cnn-small\"\nmethods = [\"rslad\"]\n",
            data.display()
        )
    };
    let cfg: ExperimentConfig = toml::from_str(&text(&data_a, "", "")).unwrap();
    let out = root.join("out");
    let cells = cfg.cells(&out).unwrap();
    // A model's cells keep the spelling the file gives (renaming would orphan its folders).
    assert_eq!(cells[0].name, "teacher-CNN-Small-natural");
    let d = device();
    let run =
        |cfg: &ExperimentConfig, only| experiment::run(cfg, &out, only, &d, &mut Log::default());
    run(&cfg, Some(0)).unwrap();
    // The teacher's weights are there but its cell is not finished: the student waits.
    let record = experiment::cell_layout(&out, &cells[0]).cell_record();
    let kept = std::fs::read(&record).unwrap();
    std::fs::remove_file(&record).unwrap();
    let e = run(&cfg, Some(1)).unwrap_err().to_string();
    assert!(e.contains("has not finished"), "{e}");
    assert!(!experiment::cell_dir(&out, &cells[1])
        .join("state.json")
        .exists());
    std::fs::write(&record, kept).unwrap();
    run(&cfg, None).unwrap();
    // A damaged sweep makes the cell unfinished; running again computes it.
    let sweep = experiment::cell_dir(&out, &cells[1]).join("sweep.json");
    std::fs::write(&sweep, b"{}").unwrap();
    assert!(!experiment::is_finished(&cfg, &out, &cells[1]));
    run(&cfg, None).unwrap();
    assert!(experiment::is_finished(&cfg, &out, &cells[1]));
    // Results of other weights written over the cell's (`rslad eval --json` there) are not its.
    let best = experiment::cell_dir(&out, &cells[1]).join("eval-best.json");
    let mut r: EvalResults =
        serde_json::from_str(&std::fs::read_to_string(&best).unwrap()).unwrap();
    let own = r.checkpoint_sha256.replace("0".repeat(64));
    std::fs::write(&best, serde_json::to_string(&r).unwrap()).unwrap();
    assert!(!experiment::is_finished(&cfg, &out, &cells[1]));
    r.checkpoint_sha256 = own;
    std::fs::write(&best, serde_json::to_string(&r).unwrap()).unwrap();
    assert!(experiment::is_finished(&cfg, &out, &cells[1]));
    // A student to train whose finished teacher's weights are gone (a copy without them) is
    // told so, not sent to run a teacher cell that is finished.
    let teacher_weights = experiment::cell_dir(&out, &cells[0]).join("best.safetensors");
    let kept_weights = std::fs::read(&teacher_weights).unwrap();
    std::fs::remove_file(&teacher_weights).unwrap();
    let student = experiment::cell_dir(&out, &cells[1]);
    let aside = root.join("student-aside");
    std::fs::rename(&student, &aside).unwrap();
    let e = run(&cfg, Some(1)).unwrap_err().to_string();
    assert!(
        e.contains("not there although its cell has finished"),
        "{e}"
    );
    std::fs::remove_dir_all(&student).ok();
    std::fs::rename(&aside, &student).unwrap();
    std::fs::write(&teacher_weights, kept_weights).unwrap();
    assert!(experiment::is_finished(&cfg, &out, &cells[1]));
    // Another attack list would not reach the finished cells: refused, naming it.
    let changed: ExperimentConfig = toml::from_str(
        &text(&data_a, "", "").replace("attacks = \"fgsm\"", "attacks = \"fgsm,pgd-sat\""),
    )
    .unwrap();
    let e = run(&changed, None).unwrap_err().to_string();
    assert!(
        e.contains("other evaluation settings") && e.contains("pgd-sat"),
        "{e}"
    );
    // `--list-cells` says so too, rather than listing the cells as finished.
    let e = experiment::check(&changed, &out, &changed.cells(&out).unwrap(), &d).unwrap_err();
    assert!(e.to_string().contains("other evaluation settings"), "{e}");
    // While another process runs a cell (nothing finished yet), a run under other settings
    // leaves the experiment's record alone.
    let fresh = root.join("out-fresh");
    experiment::prepare(&cfg, &fresh, None, &d).unwrap();
    let recorded = std::fs::read(fresh.join("experiment.toml")).unwrap();
    let cell_dir = experiment::cell_dir(&fresh, &cells[0]);
    std::fs::create_dir_all(&cell_dir).unwrap();
    let held = rslad::io::try_lock(&cell_dir.join("cell.lock"))
        .unwrap()
        .unwrap();
    let other_lr: ExperimentConfig = toml::from_str(&text(&data_a, "lr = 0.05\n", "")).unwrap();
    let e = experiment::prepare(&other_lr, &fresh, None, &d)
        .unwrap_err()
        .to_string();
    assert!(e.contains("being run by another rslad process"), "{e}");
    assert_eq!(
        std::fs::read(fresh.join("experiment.toml")).unwrap(),
        recorded
    );
    drop(held);

    // Parts of an interrupted evaluation on other test images are not reused: the student's
    // weights as a given teacher checkpoint, evaluated on data B, with a part of data A
    // planted where the evaluation's first part goes.
    let student = experiment::cell_layout(&out, &cells[1]).best();
    let given = format!("checkpoint = \"{}\"\n", student.display());
    let cfg_b: ExperimentConfig = toml::from_str(&format!(
        "dataset = \"fashion-mnist\"\ndata_dir = \"{}\"\neps = 0.1\nattacks = \"fgsm\"\n\
         eval_examples = 16\neval_batch_size = 8\neps_sweep = 0\n[teacher]\nmodel = \"cnn-small\"\n\
         {given}",
        data_b.display()
    ))
    .unwrap();
    let out_b = root.join("out-b");
    let teacher_b = &cfg_b.cells(&out_b).unwrap()[0];
    let part = rslad::train::RunLayout::new(&out_b)
        .cell(&teacher_b.name)
        .eval_part(EvalFile::Best, &experiment::parts_key("fgsm"), 0, 2);
    std::fs::create_dir_all(part.parent().unwrap()).unwrap();
    let eval = |data: &Path, json: &Path, shard: Option<&str>| {
        let mut args = vec![
            "eval".to_string(),
            "--checkpoint".into(),
            student.display().to_string(),
            "--dataset".into(),
            "fashion-mnist".into(),
            "--data-dir".into(),
            data.display().to_string(),
            "--attacks".into(),
            "fgsm".into(),
            "--eps".into(),
            "0.1".into(),
            "--n-examples".into(),
            "16".into(),
            "--batch-size".into(),
            "8".into(),
            "--no-sanity".into(),
            "--json".into(),
            json.display().to_string(),
        ];
        if let Some(s) = shard {
            args.extend(["--shard".into(), s.into()]);
        }
        let (code, _, err) = rslad(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(code, 0, "{err}");
    };
    eval(&data_a, &part, Some("0/2"));
    experiment::run(&cfg_b, &out_b, None, &d, &mut Log::default()).unwrap();
    let reference = root.join("reference-b.json");
    eval(&data_b, &reference, None);
    let read = |p: &Path| -> EvalResults {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let got = read(&experiment::cell_layout(&out_b, teacher_b).eval(EvalFile::Best));
    let want = read(&reference);
    assert_eq!(got.clean, want.clean);
    assert_eq!(got.attacks[0].robust, want.attacks[0].robust);
    assert_eq!(got.data_sha256, want.data_sha256);
    // A finished experiment whose data_dir now holds other test images is refused, by name,
    // before a cell trains or evaluates on them.
    let moved: ExperimentConfig = toml::from_str(&text(&data_b, "", "")).unwrap();
    let e = run(&moved, None).unwrap_err().to_string();
    assert!(
        e.contains("holds other test data (images or labels) than cell"),
        "{e}"
    );
    // So is one that holds the same test images but other training images, when a cell is
    // left to train on them (here a seed added to the grid).
    let data_c = root.join("data-c");
    std::fs::create_dir_all(&data_c).unwrap();
    for entry in std::fs::read_dir(&data_a).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, data_c.join(path.file_name().unwrap())).unwrap();
        }
    }
    let images = data_c.join("train-images-idx3-ubyte");
    let mut bytes = std::fs::read(&images).unwrap();
    bytes[16] ^= 0xff;
    std::fs::write(&images, bytes).unwrap();
    let moved: ExperimentConfig = toml::from_str(&text(&data_c, "", "")).unwrap();
    run(&moved, None).unwrap();
    let grown: ExperimentConfig = toml::from_str(&text(&data_c, "seeds = [0, 1]\n", "")).unwrap();
    let e = run(&grown, None).unwrap_err().to_string();
    assert!(
        e.contains("holds other training data (images or labels) than cell"),
        "{e}"
    );
    let added = &grown.cells(&out).unwrap()[2];
    assert!(!experiment::cell_layout(&out, added).root().exists());

    // A comma in the surrogate's path would split the attack list that names it.
    let with_surrogate: ExperimentConfig = toml::from_str(&format!(
        "{}[surrogate]\nmodel = \"cnn-small\"\nmethod = \"natural\"\n",
        text(&data_a, "", "")
    ))
    .unwrap();
    let comma = root.join("a,b");
    let cells = with_surrogate.cells(&comma).unwrap();
    let e = experiment::check(&with_surrogate, &comma, &cells, &d)
        .unwrap_err()
        .to_string();
    assert!(e.contains("comma"), "{e}");
    // Counts no experiment needs are refused before anything runs.
    for (extra, needle) in [
        ("eps_sweep = 1000000000\n", "at most 1000"),
        ("square_queries = 1000000000000\n", "square_queries"),
    ] {
        let t = text(&data_a, "", "").replace("eps_sweep = 2\n", extra);
        let cfg: ExperimentConfig = toml::from_str(&t).unwrap();
        let e = cfg.cells(&out).unwrap_err().to_string();
        assert!(e.contains(needle), "{e}");
    }
}
