//! Merging the results of one evaluation run in pieces (`rslad eval --shard`, or an experiment
//! cell's parts) into the result one run over all the examples gives.

use super::{bits, from_bits, AttackResult, EvalResults, StageResult};

/// Why shards of an evaluation could not be merged.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MergeError {
    #[error("no shards to merge")]
    NoShards,
    #[error("shard {number} ({examples}): {defect}")]
    Damaged {
        /// Counted from 1, in the order given.
        number: usize,
        examples: String,
        #[source]
        defect: ShardDefect,
    },
    #[error("shards of different evaluations: {} differ between {first} and {other}", differ.join(", "))]
    Different {
        differ: Vec<String>,
        first: String,
        other: String,
    },
    #[error("every shard is empty: no examples were evaluated")]
    AllEmpty,
    #[error(
        "{examples}: {attack} has robust examples but no stages, while other shards have {stages}"
    )]
    NoStages {
        examples: String,
        attack: String,
        stages: usize,
    },
    #[error("{examples}: {attack} has stages {found:?}, another shard {reference:?}")]
    OtherStages {
        examples: String,
        attack: String,
        found: Vec<String>,
        reference: Vec<String>,
    },
    #[error("shards overlap or are out of order")]
    Overlap,
    #[error(
        "shards missing: the shards split the first {total} test images ({split}), but no shard \
         holds {missing}; run those shards and merge again"
    )]
    Missing {
        total: usize,
        split: String,
        missing: String,
    },
    #[error("shards of different splits of the test set: {first} and {other}")]
    OtherSplit { first: String, other: String },
}

/// What is wrong inside one shard's outcomes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ShardDefect {
    #[error("{what} has {found} outcomes for {ids} example ids (a damaged or edited result file)")]
    Count {
        what: String,
        found: usize,
        ids: usize,
    },
    #[error("{what} has the outcome '{outcome}'; outcomes are 0 or 1")]
    Outcome { what: String, outcome: char },
    #[error(
        "{what} records accuracy {recorded}, its outcomes give {from_outcomes} (an edited \
         result file)"
    )]
    Accuracy {
        what: String,
        recorded: f64,
        from_outcomes: f64,
    },
    #[error(
        "{what} counts example {id} robust, which is misclassified without attack (an edited \
         result file: only correctly classified examples are attacked)"
    )]
    RobustNotClean { what: String, id: u64 },
}

/// Merges the shards of one evaluation (same checkpoint, attacks and ε; disjoint examples)
/// into the result an unsharded run gives: per-example outcomes concatenated in example order,
/// accuracies recomputed from them.
pub fn merge_shards(mut shards: Vec<EvalResults>) -> Result<EvalResults, MergeError> {
    if shards.is_empty() {
        return Err(MergeError::NoShards);
    }
    for (i, s) in shards.iter().enumerate() {
        check_outcomes(s).map_err(|defect| MergeError::Damaged {
            number: i + 1,
            examples: shard_name(s),
            defect,
        })?;
    }
    let first = shards[0].clone();
    for s in &shards[1..] {
        let same = s.checkpoint_sha256 == first.checkpoint_sha256
            && same_data(s, &first)
            && s.eps == first.eps
            && s.seed == first.seed
            && s.attacks
                .iter()
                .map(|a| (&a.name, &a.settings))
                .eq(first.attacks.iter().map(|a| (&a.name, &a.settings)));
        if !same {
            let mut differ = Vec::new();
            if s.checkpoint_sha256 != first.checkpoint_sha256 {
                differ.push("checkpoint (SHA-256)".to_string());
            }
            if !same_data(s, &first) {
                differ.push("test images (SHA-256 of the data)".to_string());
            }
            if s.eps != first.eps {
                differ.push(format!("eps ({} vs {})", first.eps, s.eps));
            }
            if s.seed != first.seed {
                differ.push(format!("seed ({} vs {})", first.seed, s.seed));
            }
            let names = |r: &EvalResults| r.attacks.iter().map(|a| a.name.clone()).collect();
            let (a, b): (Vec<String>, Vec<String>) = (names(&first), names(s));
            if a != b {
                differ.push(format!("attacks ({a:?} vs {b:?})"));
            } else if differ.is_empty() {
                differ.push("attack settings".into());
            }
            return Err(MergeError::Different {
                differ,
                first: shard_name(&first),
                other: shard_name(s),
            });
        }
    }
    // An empty shard (more shards than examples) adds nothing; at least one must hold some.
    shards.retain(|s| !s.example_ids.is_empty());
    if shards.is_empty() {
        return Err(MergeError::AllEmpty);
    }
    shards.sort_by_key(|s| s.example_ids[0]);
    // Stages: a shard none of whose examples was attacked (all misclassified) ran no stage;
    // its examples are not robust at any stage. Otherwise every shard has the same stages.
    for k in 0..first.attacks.len() {
        let names = |s: &EvalResults| -> Vec<String> {
            s.attacks[k]
                .stages
                .iter()
                .map(|st| st.name.clone())
                .collect()
        };
        let reference = shards
            .iter()
            .map(names)
            .find(|n| !n.is_empty())
            .unwrap_or_default();
        for s in shards.iter_mut() {
            let name = shard_name(s);
            let a = &mut s.attacks[k];
            if a.stages.is_empty() && !reference.is_empty() {
                if a.robust.contains('1') {
                    return Err(MergeError::NoStages {
                        examples: name,
                        attack: a.name.clone(),
                        stages: reference.len(),
                    });
                }
                a.stages = reference
                    .iter()
                    .map(|name| StageResult {
                        name: name.clone(),
                        robust_accuracy: 0.0,
                        robust: a.robust.clone(),
                    })
                    .collect();
            }
        }
        for s in &shards {
            if names(s) != reference {
                return Err(MergeError::OtherStages {
                    examples: shard_name(s),
                    attack: s.attacks[k].name.clone(),
                    found: names(s),
                    reference,
                });
            }
        }
    }
    let first = shards[0].clone();
    let mut ids: Vec<u64> = shards.iter().flat_map(|s| s.example_ids.clone()).collect();
    let n = ids.len();
    ids.dedup();
    if ids.len() != n || ids.windows(2).any(|w| w[0] >= w[1]) {
        return Err(MergeError::Overlap);
    }
    check_complete(&shards_all_records(&shards), &ids)?;
    let share = |v: &[bool]| v.iter().filter(|&&b| b).count() as f64 / v.len() as f64;
    let concat = |f: &dyn Fn(&EvalResults) -> String| -> Vec<bool> {
        shards.iter().flat_map(|s| from_bits(&f(s))).collect()
    };
    let clean = concat(&|s| s.clean.clone());
    let mut attacks = Vec::new();
    for (k, a) in first.attacks.iter().enumerate() {
        let robust = concat(&|s| s.attacks[k].robust.clone());
        let stages = a
            .stages
            .iter()
            .enumerate()
            .map(|(j, st)| {
                let flags = concat(&|s| s.attacks[k].stages[j].robust.clone());
                StageResult {
                    name: st.name.clone(),
                    robust_accuracy: share(&flags),
                    robust: bits(&flags),
                }
            })
            .collect();
        attacks.push(AttackResult {
            name: a.name.clone(),
            black_box: a.black_box,
            robust_accuracy: share(&robust),
            robust: bits(&robust),
            stages,
            settings: a.settings.clone(),
            seconds: shards.iter().map(|s| s.attacks[k].seconds).sum(),
        });
    }
    let mut merged = EvalResults {
        example_ids: ids,
        clean_accuracy: share(&clean),
        clean: bits(&clean),
        attacks,
        warnings: Vec::new(),
        seconds: shards.iter().map(|s| s.seconds).sum(),
        shard: None,
        data_sha256: shards.iter().find_map(|s| s.data_sha256.clone()),
        ..first
    };
    merged.warnings = crate::eval::consistency_warnings(&merged);
    // A shard's own consistency warnings are recomputed above over every example; the rest
    // (counts of clipped points, NaN logits, ...) are kept per shard, so that two shards each
    // reporting "2 points" are not read as 2 in all.
    for s in &shards {
        let own = crate::eval::consistency_warnings(s);
        for w in s.warnings.iter().filter(|w| !own.contains(w)) {
            let w = format!("{}: {w}", shard_name(s));
            if !merged.warnings.contains(&w) {
                merged.warnings.push(w);
            }
        }
    }
    Ok(merged)
}

/// Whether two results are on the same test images, as far as they recorded them (files
/// written before the data's hash was recorded are taken at their word).
pub fn same_data(a: &EvalResults, b: &EvalResults) -> bool {
    match (&a.data_sha256, &b.data_sha256) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    }
}

/// The shard records of `shards` (those written before shards recorded theirs have none).
fn shards_all_records(shards: &[EvalResults]) -> Vec<super::ShardRecord> {
    shards.iter().filter_map(|s| s.shard).collect()
}

/// Shards that record their split must, merged, hold every example of it: `ids` (sorted,
/// distinct) must be exactly `0..test_examples`.
fn check_complete(records: &[super::ShardRecord], ids: &[u64]) -> Result<(), MergeError> {
    let Some(first) = records.first() else {
        return Ok(());
    };
    let split = |r: &super::ShardRecord| format!("{} shards of {}", r.count, r.test_examples);
    if let Some(other) = records
        .iter()
        .find(|r| (r.count, r.test_examples) != (first.count, first.test_examples))
    {
        return Err(MergeError::OtherSplit {
            first: split(first),
            other: split(other),
        });
    }
    let total = first.test_examples as u64;
    if let Some(&beyond) = ids.iter().find(|&&id| id >= total) {
        return Err(MergeError::OtherSplit {
            first: split(first),
            other: format!("a shard holding example {beyond}"),
        });
    }
    let mut gaps = Vec::new();
    let mut next = 0u64;
    for &id in ids.iter().chain(std::iter::once(&total)) {
        if id > next {
            gaps.push(if id - 1 == next {
                format!("example {next}")
            } else {
                format!("examples {next}..={}", id - 1)
            });
        }
        next = next.max(id.saturating_add(1));
    }
    if gaps.is_empty() {
        return Ok(());
    }
    Err(MergeError::Missing {
        total: first.test_examples,
        split: split(first),
        missing: gaps.join(", "),
    })
}

fn shard_name(s: &EvalResults) -> String {
    match (s.example_ids.first(), s.example_ids.last()) {
        (Some(a), Some(b)) => format!("examples {a}..={b}"),
        _ => "no examples".into(),
    }
}

/// A results file is consistent: one outcome character ('0' or '1') per example id, for the
/// clean pass, every attack and every stage.
pub fn check_outcomes(s: &EvalResults) -> Result<(), ShardDefect> {
    let n = s.example_ids.len();
    let check = |what: &str, flags: &str| {
        if flags.chars().count() != n {
            Err(ShardDefect::Count {
                what: what.to_string(),
                found: flags.chars().count(),
                ids: n,
            })
        } else if let Some(c) = flags.chars().find(|c| *c != '0' && *c != '1') {
            Err(ShardDefect::Outcome {
                what: what.to_string(),
                outcome: c,
            })
        } else {
            Ok(())
        }
    };
    check("clean", &s.clean)?;
    let within_clean = |what: &str, flags: &str| {
        let broken = s
            .clean
            .chars()
            .zip(flags.chars())
            .position(|(c, r)| c == '0' && r == '1');
        match broken {
            Some(i) => Err(ShardDefect::RobustNotClean {
                what: what.to_string(),
                id: s.example_ids[i],
            }),
            None => Ok(()),
        }
    };
    for a in &s.attacks {
        check(&a.name, &a.robust)?;
        within_clean(&a.name, &a.robust)?;
        for st in &a.stages {
            let what = format!("{} stage {}", a.name, st.name);
            check(&what, &st.robust)?;
            within_clean(&what, &st.robust)?;
        }
    }
    Ok(())
}

/// The recorded accuracies (clean and per attack) are the fractions of 1s in their outcomes,
/// as rslad writes them: a table built from them then agrees with the comparisons built from
/// the outcomes. (Merging recomputes them, so shards are not held to this.)
pub fn check_accuracies(s: &EvalResults) -> Result<(), ShardDefect> {
    let n = s.example_ids.len().max(1) as f64;
    let agrees = |what: &str, flags: &str, recorded: f64| {
        let from_outcomes = flags.matches('1').count() as f64 / n;
        if (recorded - from_outcomes).abs() > 1e-9 {
            Err(ShardDefect::Accuracy {
                what: what.to_string(),
                recorded,
                from_outcomes,
            })
        } else {
            Ok(())
        }
    };
    agrees("clean", &s.clean, s.clean_accuracy)?;
    for a in &s.attacks {
        agrees(&a.name, &a.robust, a.robust_accuracy)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::ShardRecord;

    /// Which examples a merge of recorded shards lacks, in words; ids beyond the split are
    /// another split, and shards written before splits were recorded are not checked.
    #[test]
    fn missing_examples_are_named() {
        let rec = |index| ShardRecord {
            index,
            count: 3,
            test_examples: 9,
        };
        let check = |ids: &[u64]| check_complete(&[rec(0), rec(2)], ids);
        assert_eq!(check(&(0..9).collect::<Vec<_>>()), Ok(()));
        let e = check(&[0, 1, 2, 6, 7, 8]).unwrap_err().to_string();
        assert!(e.contains("no shard holds examples 3..=5"), "{e}");
        let e = check(&[0, 2, 3, 4, 5, 6, 7]).unwrap_err().to_string();
        assert!(e.contains("example 1, example 8"), "{e}");
        let e = check(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
            .unwrap_err()
            .to_string();
        assert!(e.contains("example 9"), "{e}");
        assert_eq!(check_complete(&[], &[4, 5]), Ok(()));
        let other = ShardRecord { count: 2, ..rec(1) };
        let e = check_complete(&[rec(0), other], &[0])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("3 shards of 9") && e.contains("2 shards of 9"),
            "{e}"
        );
    }
}
