//! Reports of a run: the human text, the JSON document, and the exit code they both state.

pub mod human;
pub mod json;

use crate::engine::{HostReport, Mode, Status};
use crate::fleet::Outcome;

/// Counts over every host of a run.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Summary {
    pub tasks: usize,
    pub pass: usize,
    pub drift: usize,
    pub changed: usize,
    pub fail: usize,
    pub skip: usize,
    pub deselected: usize,
    /// Hosts that could not run at all: unreachable, refused, locked, or a playbook error.
    pub hosts_failed: usize,
}

impl Summary {
    pub fn of(outcomes: &[Outcome]) -> Summary {
        outcomes
            .iter()
            .fold(Summary::default(), |s, o| match &o.report {
                Ok(h) => s.add(&Summary::host(h)),
                Err(_) => Summary {
                    hosts_failed: s.hosts_failed + 1,
                    ..s
                },
            })
    }

    pub fn host(h: &HostReport) -> Summary {
        Summary {
            tasks: h.tasks.len(),
            pass: h.count(Status::Pass),
            drift: h.count(Status::Drift),
            changed: h.count(Status::Changed),
            fail: h.count(Status::Fail),
            skip: h.count(Status::Skip),
            deselected: h.deselected,
            hosts_failed: 0,
        }
    }

    fn add(self, o: &Summary) -> Summary {
        Summary {
            tasks: self.tasks + o.tasks,
            pass: self.pass + o.pass,
            drift: self.drift + o.drift,
            changed: self.changed + o.changed,
            fail: self.fail + o.fail,
            skip: self.skip + o.skip,
            deselected: self.deselected + o.deselected,
            hosts_failed: self.hosts_failed + o.hosts_failed,
        }
    }

    /// Puppet's detailed exit codes: 0 in sync, 2 drift (or, with `detailed`, changes made),
    /// 4 failures, 6 both.
    pub fn exit_code(&self, mode: Mode, detailed: bool) -> i32 {
        let failed = if self.fail > 0 || self.hosts_failed > 0 {
            4
        } else {
            0
        };
        let differs = match mode {
            Mode::Check => self.drift > 0,
            Mode::Apply => detailed && self.changed > 0,
        };
        failed + if differs { 2 } else { 0 }
    }
}

/// The word a status is shown as, which differs between check and apply for "in sync".
pub fn status_word(mode: Mode, s: Status) -> &'static str {
    match (mode, s) {
        (Mode::Check, Status::Pass) => "PASS",
        (Mode::Apply, Status::Pass) => "OK",
        (_, Status::Drift) => "DRIFT",
        (_, Status::Changed) => "CHANGED",
        (_, Status::Fail) => "FAIL",
        (_, Status::Skip) => "SKIP",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_puppet() {
        let s = |drift, changed, fail| Summary {
            drift,
            changed,
            fail,
            ..Summary::default()
        };
        assert_eq!(s(0, 0, 0).exit_code(Mode::Check, false), 0);
        assert_eq!(s(3, 0, 0).exit_code(Mode::Check, false), 2);
        assert_eq!(s(0, 0, 1).exit_code(Mode::Check, false), 4);
        assert_eq!(s(1, 0, 1).exit_code(Mode::Check, false), 6);
        assert_eq!(s(0, 5, 0).exit_code(Mode::Apply, false), 0);
        assert_eq!(s(0, 5, 0).exit_code(Mode::Apply, true), 2);
        assert_eq!(s(0, 5, 1).exit_code(Mode::Apply, true), 6);
        assert_eq!(s(0, 0, 1).exit_code(Mode::Apply, false), 4);
        let unreachable = Summary {
            hosts_failed: 1,
            ..s(2, 0, 0)
        };
        assert_eq!(unreachable.exit_code(Mode::Check, false), 6);
    }
}
