//! The statistics behind the paper's claim (issue 15): for RSLAD against every other student
//! method, and for the teacher against the SAT student, the difference in accuracy per attack,
//! averaged over seeds, with a 95% interval from a paired bootstrap over the test images.
//!
//! Every model of an experiment is attacked on the same first N test images, so an image's
//! outcome is paired across methods and across seeds: one resample of image indices applies to
//! both sides and to every seed (an image hard for one seed is hard for the others; resampling
//! each seed on its own would understate the spread). The interval covers the sampling of test
//! images given the trained models; the spread over training seeds is shown beside it, as the
//! per-seed differences. A difference whose interval contains 0 is no evidence either way.

use crate::eval::{from_bits, EvalResults};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Whether a teacher-margin row clears [`TEACHER_MARGIN_POINTS`].
fn premise_holds(margin: &Comparison) -> bool {
    100.0 * margin.interval.difference >= TEACHER_MARGIN_POINTS
}

/// Bootstrap resamples per comparison; enough for the 2.5% and 97.5% quantiles to settle to
/// about 0.1 accuracy points at N = 1000.
pub const REPLICATES: usize = 5000;
/// The bootstrap's seed: the report is a pure function of the results files.
pub const BOOTSTRAP_SEED: u64 = 0;
/// How far, in AutoAttack points, the teacher must be above the SAT student for the claim to be
/// testable (docs/spec/methods.md, CPU-scale setting: distillation cannot pass on robustness the
/// teacher does not have).
pub const TEACHER_MARGIN_POINTS: f64 = 5.0;

/// The paired difference mean(a) − mean(b) and its 95% percentile interval, in [−1, 1].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub difference: f64,
    pub low: f64,
    pub high: f64,
}

impl Interval {
    /// "better" or "worse" when the interval excludes 0, else "no evidence either way".
    pub fn verdict(&self) -> &'static str {
        if self.low > 0.0 {
            "better"
        } else if self.high < 0.0 {
            "worse"
        } else {
            "no evidence either way"
        }
    }
}

/// Per-example outcomes of the seeds of one side, every vector on the same images.
fn per_image_mean(side: &[Vec<bool>], n: usize) -> Vec<f64> {
    let mut m = vec![0.0; n];
    for v in side {
        for (acc, &b) in m.iter_mut().zip(v) {
            *acc += b as u8 as f64;
        }
    }
    m.iter().map(|x| x / side.len() as f64).collect()
}

/// Quantile `q` of sorted values, interpolated linearly between order statistics.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (i, frac) = (pos.floor() as usize, pos - pos.floor());
    match sorted.get(i + 1) {
        Some(next) => sorted[i] + frac * (next - sorted[i]),
        None => sorted[i],
    }
}

/// Why a paired bootstrap cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootstrapError {
    #[error("a paired comparison needs outcomes on both sides")]
    Empty,
    #[error("paired outcomes of different lengths (not the same images)")]
    Lengths,
    #[error("the bootstrap needs at least 2 replicates")]
    Replicates,
}

/// Why two groups of results are not compared (reported as a warning).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
enum ComparisonError {
    #[error(
        "{model} {label} against {against}: not every seed attacked the same images; no \
         paired comparison"
    )]
    OtherImages {
        model: String,
        label: String,
        against: String,
    },
    #[error(
        "{model} {label} against {against}: no seed has finished on both sides; no paired \
         comparison"
    )]
    NoSharedSeed {
        model: String,
        label: String,
        against: String,
    },
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
}

/// The paired bootstrap: `a` and `b` hold one outcome vector per seed (a side may have one
/// seed, as the teacher), all over the same images in the same order. Each resample draws N
/// image indices with replacement and applies them to both sides and every seed.
pub fn paired_interval(
    a: &[Vec<bool>],
    b: &[Vec<bool>],
    replicates: usize,
    seed: u64,
) -> Result<Interval, BootstrapError> {
    let n = a.first().map_or(0, Vec::len);
    if a.is_empty() || b.is_empty() || n == 0 {
        return Err(BootstrapError::Empty);
    }
    if a.iter().chain(b).any(|v| v.len() != n) {
        return Err(BootstrapError::Lengths);
    }
    if replicates < 2 {
        return Err(BootstrapError::Replicates);
    }
    let (ma, mb) = (per_image_mean(a, n), per_image_mean(b, n));
    let diff: Vec<f64> = ma.iter().zip(&mb).map(|(x, y)| x - y).collect();
    let difference = diff.iter().sum::<f64>() / n as f64;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut reps: Vec<f64> = (0..replicates)
        .map(|_| (0..n).map(|_| diff[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    reps.sort_by(f64::total_cmp);
    Ok(Interval {
        difference,
        low: quantile(&reps, 0.025),
        high: quantile(&reps, 0.975),
    })
}

/// One model × method variant's results of one file (eval-best.json, blackbox-best.json), by
/// seed.
#[derive(Debug, Clone)]
pub struct GroupResults {
    pub role: String,
    pub model: String,
    pub method: String,
    pub black_box: bool,
    pub results: Vec<(u64, EvalResults)>,
}

impl GroupResults {
    /// Outcome vectors per seed for a column ("Clean" or an attack name), if every seed has it.
    fn column(&self, name: &str) -> Option<Vec<Vec<bool>>> {
        self.results
            .iter()
            .map(|(_, r)| {
                if name == "Clean" {
                    Some(from_bits(&r.clean))
                } else {
                    r.attacks
                        .iter()
                        .find(|a| a.name == name)
                        .map(|a| from_bits(&a.robust))
                }
            })
            .collect()
    }

    fn columns(&self) -> Vec<String> {
        let mut c: Vec<String> = Vec::new();
        if !self.black_box {
            c.push("Clean".into());
        }
        if let Some((_, r)) = self.results.first() {
            c.extend(r.attacks.iter().map(|a| a.name.clone()));
        }
        c
    }

    fn seeds(&self) -> Vec<u64> {
        self.results.iter().map(|r| r.0).collect()
    }

    /// The same group, keeping the given seeds only.
    fn only(&self, seeds: &[u64]) -> GroupResults {
        GroupResults {
            results: self
                .results
                .iter()
                .filter(|(s, _)| seeds.contains(s))
                .cloned()
                .collect(),
            ..self.clone()
        }
    }

    /// The attacked images, if every seed attacked the same ones.
    fn example_ids(&self) -> Option<&[u64]> {
        let first = &self.results.first()?.1.example_ids;
        self.results
            .iter()
            .all(|(_, r)| &r.example_ids == first)
            .then_some(first.as_slice())
    }
}

/// One row of a comparison table: `method` − `against` in one column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub model: String,
    /// The side under test (an RSLAD variant, or the teacher).
    pub method: String,
    pub against: String,
    pub against_model: String,
    pub column: String,
    pub black_box: bool,
    pub seeds: Vec<u64>,
    pub n_examples: usize,
    /// Accuracy of each side in [0,1], mean over its seeds.
    pub accuracy: f64,
    pub against_accuracy: f64,
    pub interval: Interval,
    /// Whole-set differences per seed (the teacher's one seed against each of the other's).
    pub per_seed: Vec<(u64, f64)>,
    pub verdict: String,
}

fn accuracy(side: &[Vec<bool>]) -> f64 {
    let n: usize = side.iter().map(Vec::len).sum();
    side.iter().flatten().filter(|&&b| b).count() as f64 / n.max(1) as f64
}

/// "better" or "worse" as the interval says, unless the per-seed differences disagree with it
/// in sign: the interval covers the images, not the training seeds, so a difference that one
/// seed reverses is "mixed over seeds".
fn verdict(interval: &Interval, per_seed: &[(u64, f64)]) -> &'static str {
    let v = interval.verdict();
    let reversed = |d: f64| {
        if interval.low > 0.0 {
            d <= 0.0
        } else {
            d >= 0.0
        }
    };
    if v != "no evidence either way" && per_seed.len() > 1 && per_seed.iter().any(|p| reversed(p.1))
    {
        "mixed over seeds"
    } else {
        v
    }
}

/// Two students are compared seed against seed: both keep only the seeds both have (while an
/// experiment runs one side may have more), with a warning when that drops any.
fn shared_seeds(
    a: &GroupResults,
    b: &GroupResults,
    label: &str,
) -> Result<(GroupResults, GroupResults, Option<String>), ComparisonError> {
    let (sa, sb) = (a.seeds(), b.seeds());
    let shared: Vec<u64> = sa.iter().copied().filter(|s| sb.contains(s)).collect();
    if shared.is_empty() {
        return Err(ComparisonError::NoSharedSeed {
            model: a.model.clone(),
            label: label.to_string(),
            against: b.method.clone(),
        });
    }
    let warning = (shared.len() < sa.len().max(sb.len())).then(|| {
        format!(
            "{} {label} against {}: compared on seeds {shared:?} only, the seeds both have \
             ({label} has {sa:?}, {} {sb:?})",
            a.model, b.method, b.method
        )
    });
    Ok((a.only(&shared), b.only(&shared), warning))
}

/// `a` − `b` per column. A teacher (`a`, one run) is compared with each of `b`'s seeds;
/// students are compared seed against seed (see [`shared_seeds`]).
fn compare(
    a: &GroupResults,
    b: &GroupResults,
    label: &str,
) -> Result<Vec<Comparison>, ComparisonError> {
    let ids = a.example_ids().filter(|ids| Some(*ids) == b.example_ids());
    let Some(ids) = ids else {
        return Err(ComparisonError::OtherImages {
            model: a.model.clone(),
            label: label.to_string(),
            against: b.method.clone(),
        });
    };
    let mut out = Vec::new();
    for column in a.columns() {
        let (Some(ca), Some(cb)) = (a.column(&column), b.column(&column)) else {
            continue;
        };
        let interval = paired_interval(&ca, &cb, REPLICATES, BOOTSTRAP_SEED)?;
        let (sa, sb) = (a.seeds(), b.seeds());
        let per_seed = if sa == sb {
            sa.iter()
                .zip(ca.iter().zip(&cb))
                .map(|(&s, (x, y))| {
                    (
                        s,
                        accuracy(std::slice::from_ref(x)) - accuracy(std::slice::from_ref(y)),
                    )
                })
                .collect()
        } else if a.role == "teacher" {
            sb.iter()
                .zip(&cb)
                .map(|(&s, y)| (s, accuracy(&ca) - accuracy(std::slice::from_ref(y))))
                .collect()
        } else {
            Vec::new()
        };
        let mut seeds = sa.clone();
        seeds.extend(sb.iter().filter(|s| !sa.contains(s)));
        out.push(Comparison {
            model: a.model.clone(),
            method: label.to_string(),
            against: b.method.clone(),
            against_model: b.model.clone(),
            column,
            black_box: a.black_box,
            seeds,
            n_examples: ids.len(),
            accuracy: accuracy(&ca),
            against_accuracy: accuracy(&cb),
            interval,
            verdict: verdict(&interval, &per_seed).to_string(),
            per_seed,
        });
    }
    Ok(out)
}

/// The claim's comparisons: every RSLAD variant against every other student method of the same
/// model, per column; and the teacher against each model's SAT student. Problems (images that
/// differ) come back as warnings.
pub fn claim(groups: &[GroupResults]) -> (Vec<Comparison>, Vec<Comparison>, Vec<String>) {
    let (mut comparisons, mut margins, mut warnings) = (Vec::new(), Vec::new(), Vec::new());
    let students = || groups.iter().filter(|g| g.role == "student");
    let is_rslad = |g: &GroupResults| g.method.split(':').next() == Some("rslad");
    for a in students().filter(|g| is_rslad(g)) {
        // Two RSLAD variants are compared once, not in both directions.
        for b in students().filter(|b| {
            b.model == a.model
                && b.black_box == a.black_box
                && !(is_rslad(b) && b.method <= a.method)
        }) {
            let paired = shared_seeds(a, b, &a.method).and_then(|(a, b, warning)| {
                warnings.extend(warning);
                compare(&a, &b, &a.method)
            });
            match paired {
                Ok(c) => comparisons.extend(c),
                Err(e) => warnings.push(e.to_string()),
            }
        }
    }
    for t in groups.iter().filter(|g| g.role == "teacher") {
        for s in students().filter(|s| s.method == "sat" && s.black_box == t.black_box) {
            match compare(t, s, &format!("{} (teacher)", t.method)) {
                Ok(c) => margins.extend(c),
                Err(e) => warnings.push(e.to_string()),
            }
        }
    }
    for m in margins.iter().filter(|m| m.column == "AA" && !m.black_box) {
        let points = 100.0 * m.interval.difference;
        if !premise_holds(m) {
            warnings.push(format!(
                "the {} teacher is {points:+.2} AA points above the {} SAT student, under the \
                 {} the claim needs (docs/spec/methods.md, CPU-scale traps): distillation cannot pass \
                 on robustness the teacher lacks; train the teacher longer (teacher.epochs) or \
                 wider before the other students",
                m.model, m.against_model, TEACHER_MARGIN_POINTS
            ));
        }
    }
    (comparisons, margins, warnings)
}

fn points(v: f64) -> String {
    format!("{:+.2}", 100.0 * v)
}

fn rows(list: &[Comparison], against_label: bool) -> String {
    let mut md = String::from(
        "| model | method | against | attack | seeds | accuracy | against | difference | 95% interval | per seed | verdict |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for c in list {
        let per_seed = c
            .per_seed
            .iter()
            .map(|(s, d)| format!("s{s} {}", points(*d)))
            .collect::<Vec<_>>()
            .join(", ");
        let against = if against_label {
            format!("{} {} (student)", c.against_model, c.against)
        } else {
            c.against.clone()
        };
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.2} | {:.2} | {} | [{}, {}] | {} | {} |\n",
            c.model,
            c.method,
            against,
            c.column,
            c.seeds.len(),
            100.0 * c.accuracy,
            100.0 * c.against_accuracy,
            points(c.interval.difference),
            points(c.interval.low),
            points(c.interval.high),
            per_seed,
            c.verdict
        ));
    }
    md
}

/// The Markdown sections: the teacher's margin, then RSLAD against each method.
pub fn markdown(comparisons: &[Comparison], margins: &[Comparison]) -> String {
    let mut md = String::new();
    let how = format!(
        "Accuracy points, mean over seeds, on the same test images; 95% interval from a paired \
         bootstrap over the images ({REPLICATES} resamples, seed {BOOTSTRAP_SEED}; it covers the \
         choice of test images, the per-seed column shows the spread over training seeds). An \
         interval that contains 0 is no evidence either way; a difference whose interval \
         excludes 0 but that a seed reverses is \"mixed over seeds\". Each row is a 95% \
         interval on its own: among many rows, about one in twenty of those with no real \
         difference still reads \"better\" or \"worse\".\n\n"
    );
    if !margins.is_empty() {
        md.push_str("\n## The teacher's margin over the SAT student\n\n");
        md.push_str(&format!(
            "Teacher minus SAT student, best checkpoints. The claim is testable only with an AA \
             margin of at least {TEACHER_MARGIN_POINTS} points. "
        ));
        md.push_str(&how);
        md.push_str(&rows(margins, true));
        for m in margins.iter().filter(|m| m.column == "AA" && !m.black_box) {
            let holds = premise_holds(m);
            md.push_str(&format!(
                "\n**The premise {}**: the {} teacher is {} AA points above the {} SAT student \
                 (95% interval [{}, {}]), {} the {TEACHER_MARGIN_POINTS} the claim needs.\n",
                if holds { "holds" } else { "fails" },
                m.model,
                points(m.interval.difference),
                m.against_model,
                points(m.interval.low),
                points(m.interval.high),
                if holds { "at least" } else { "under" },
            ));
        }
    }
    if !comparisons.is_empty() {
        md.push_str("\n## The claim: RSLAD against each method\n\n");
        md.push_str(
            "RSLAD variant minus the other method, best checkpoints (black-box: the seeds that \
             have them). ",
        );
        md.push_str(&how);
        for (black_box, title) in [(false, "White-box"), (true, "Black-box")] {
            let part: Vec<Comparison> = comparisons
                .iter()
                .filter(|c| c.black_box == black_box)
                .cloned()
                .collect();
            if !part.is_empty() {
                md.push_str(&format!("### {title}\n\n{}\n", rows(&part, false)));
            }
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize, ones: std::ops::Range<usize>) -> Vec<bool> {
        (0..n).map(|i| ones.contains(&i)).collect()
    }

    #[test]
    fn identical_outcomes_give_zero_and_no_evidence() {
        let a = vec![pattern(200, 0..130), pattern(200, 20..150)];
        let i = paired_interval(&a, &a, 1000, 0).unwrap();
        assert_eq!((i.difference, i.low, i.high), (0.0, 0.0, 0.0));
        assert_eq!(i.verdict(), "no evidence either way");
    }

    /// a is robust on every image b is, and on 200 more of 1000: per-image differences are 1 on
    /// 200 images, variance 0.2 − 0.2² = 0.16, standard error √(0.16/1000) = 0.01265, interval
    /// 0.2 ± 0.0248. An unpaired bootstrap would be wider (±0.042): pairing is what this checks.
    #[test]
    fn robust_wherever_the_other_is_not_is_clear_evidence() {
        let a = vec![pattern(1000, 0..700)];
        let b = vec![pattern(1000, 0..500)];
        let i = paired_interval(&a, &b, 20000, 0).unwrap();
        assert!((i.difference - 0.2).abs() < 1e-12);
        let half = 1.96 * (0.16f64 / 1000.0).sqrt();
        assert!((i.low - (0.2 - half)).abs() < 0.004, "{i:?}");
        assert!((i.high - (0.2 + half)).abs() < 0.004, "{i:?}");
        assert_eq!(i.verdict(), "better");
        let j = paired_interval(&b, &a, 2000, 0).unwrap();
        assert_eq!(j.verdict(), "worse");
        assert!((j.difference + 0.2).abs() < 1e-12);
    }

    /// Per-image differences +1 on 300 images, −1 on 200, 0 on 500: mean 0.1, variance
    /// E[d²] − 0.1² = 0.49, so the mean's standard error is √(0.49/1000) and the normal
    /// interval is 0.1 ± 1.96·0.02214 = [0.0566, 0.1434].
    #[test]
    fn interval_matches_the_normal_approximation() {
        let n = 1000;
        let a = vec![pattern(n, 0..600)];
        let b = vec![pattern(n, 300..800)];
        let i = paired_interval(&a, &b, 20000, 7).unwrap();
        let se = (0.49f64 / n as f64).sqrt();
        assert!((i.difference - 0.1).abs() < 1e-12);
        assert!((i.low - (0.1 - 1.96 * se)).abs() < 0.004, "{i:?}");
        assert!((i.high - (0.1 + 1.96 * se)).abs() < 0.004, "{i:?}");
        assert_eq!(i.verdict(), "better");
        // Seeded: the same inputs give the same interval.
        assert_eq!(paired_interval(&a, &b, 20000, 7).unwrap(), i);
    }

    /// Seeds on the same images are resampled together: seed 0 is ahead on images 500..600 and
    /// seed 1 behind on the same images, so every image's mean difference is 0 and so is every
    /// resample (resampling the seeds separately would give a nonzero width).
    #[test]
    fn seeds_share_the_image_resample() {
        let n = 1000;
        let a = vec![pattern(n, 0..600), pattern(n, 0..500)];
        let b = vec![pattern(n, 0..500), pattern(n, 0..600)];
        let i = paired_interval(&a, &b, 20000, 3).unwrap();
        assert_eq!(i.difference, 0.0);
        assert_eq!((i.low, i.high), (0.0, 0.0));
        assert_eq!(i.verdict(), "no evidence either way");
    }

    /// The interval covers the images only: a seed that reverses the sign makes "better" or
    /// "worse" "mixed over seeds"; one seed, or seeds that agree, keep the interval's verdict.
    #[test]
    fn a_seed_that_reverses_the_difference_makes_it_mixed() {
        let up = Interval {
            difference: 0.03,
            low: 0.01,
            high: 0.05,
        };
        let down = Interval {
            difference: -0.03,
            low: -0.05,
            high: -0.01,
        };
        let none = Interval {
            difference: 0.01,
            low: -0.01,
            high: 0.03,
        };
        assert_eq!(verdict(&up, &[(0, 0.05), (1, 0.01), (2, 0.03)]), "better");
        assert_eq!(
            verdict(&up, &[(0, 0.07), (1, -0.01), (2, 0.03)]),
            "mixed over seeds"
        );
        assert_eq!(verdict(&up, &[(0, 0.05), (1, 0.0)]), "mixed over seeds");
        assert_eq!(verdict(&up, &[(0, -0.02)]), "better");
        assert_eq!(verdict(&down, &[(0, -0.05), (1, -0.01)]), "worse");
        assert_eq!(verdict(&down, &[(0, -0.07), (1, 0.01)]), "mixed over seeds");
        assert_eq!(
            verdict(&none, &[(0, 0.05), (1, -0.01)]),
            "no evidence either way"
        );
    }

    #[test]
    fn mismatched_lengths_are_refused() {
        let e = paired_interval(&[pattern(10, 0..5)], &[pattern(9, 0..5)], 100, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("same images"), "{e}");
        assert!(paired_interval(&[], &[pattern(9, 0..5)], 100, 0).is_err());
    }
}
