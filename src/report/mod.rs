//! Reports of a run: the human text, the JSON document, and the exit code they both state.

pub mod human;
pub mod json;

use crate::engine::{HostReport, Mode, Status};

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
}

impl Summary {
    pub fn of(hosts: &[HostReport]) -> Summary {
        hosts.iter().fold(Summary::default(), |mut s, h| {
            s.tasks += h.tasks.len();
            s.pass += h.count(Status::Pass);
            s.drift += h.count(Status::Drift);
            s.changed += h.count(Status::Changed);
            s.fail += h.count(Status::Fail);
            s.skip += h.count(Status::Skip);
            s.deselected += h.deselected;
            s
        })
    }

    /// Puppet's detailed exit codes: 0 in sync, 2 drift (or, with `detailed`, changes made),
    /// 4 failures, 6 both.
    pub fn exit_code(&self, mode: Mode, detailed: bool) -> i32 {
        let failed = if self.fail > 0 { 4 } else { 0 };
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
    }
}
