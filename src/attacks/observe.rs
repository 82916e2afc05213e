//! Progress of long attacks (AutoAttack's components, APGD's targets, FAB, Square), reported
//! to an observer passed to [`super::Attack::run_observed`]. Reports are coarse (every few
//! iterations) so that watching costs no measurable time.

/// What an attack reports while it runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<'a> {
    /// A component (or a single attack) starts on `attacked` points.
    Start { component: &'a str, attacked: usize },
    /// `done` of `total` units of work (iterations over all targets, queries); `robust` of the
    /// attacked points are not broken yet.
    Step {
        component: &'a str,
        done: usize,
        total: usize,
        robust: usize,
    },
    /// The component finished; `robust` of its attacked points survived it.
    End { component: &'a str, robust: usize },
}

/// An observer that ignores everything.
pub fn ignore(_: &Event) {}

/// How often iterative attacks report: about every 5% of their iterations.
pub fn every(total: usize) -> usize {
    (total / 20).max(1)
}
