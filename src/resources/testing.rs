//! Test helpers for resources: build one from YAML text and drive it against a temporary root.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::{Error, Loc, Result, Source};
use crate::facts::Facts;
use crate::resource::{kind, BuildCtx, Change, Files, Observed, Params, Resource};
use crate::transport::{Local, Transport};

/// Tests refer to no template or source files.
pub struct NoFiles;

impl Files for NoFiles {
    fn template(&self, rel: &str, loc: &Loc) -> Result<String> {
        Err(Error::at(loc, format!("no template {rel} in tests")))
    }
    fn source(&self, rel: &str, loc: &Loc) -> Result<Vec<u8>> {
        Err(Error::at(loc, format!("no source {rel} in tests")))
    }
}

pub fn build(kind_name: &str, yaml: &str, live: bool) -> Result<Box<dyn Resource>> {
    let facts = Facts {
        live,
        ..debian_facts()
    };
    build_with(kind_name, yaml, &facts)
}

/// Builds a resource for a target with these facts (`facts.live` says whether it is running).
pub fn build_with(kind_name: &str, yaml: &str, facts: &Facts) -> Result<Box<dyn Resource>> {
    let node = crate::yaml::parse(&Source::new("t.yml", yaml))?;
    let k = kind(kind_name).expect("known kind");
    let p = Params::new(&node, k.name)?;
    (k.build)(
        &p,
        &BuildCtx {
            live: facts.live,
            facts,
            files: &NoFiles,
        },
    )
}

/// The facts of a Debian 12 host with systemd and apt, as the lab's hosts report them.
pub fn debian_facts() -> Facts {
    Facts {
        hostname: "h1".into(),
        os_id: "debian".into(),
        os_version: "12".into(),
        os_family: "debian".into(),
        os_name: "Debian GNU/Linux 12 (bookworm)".into(),
        live: true,
        pkg_manager: "apt".into(),
        init: "systemd".into(),
        ..Facts::default()
    }
}

/// The build error as `line:col: message`.
pub fn build_err(kind_name: &str, yaml: &str) -> String {
    match build(kind_name, yaml, false) {
        Ok(_) => panic!("expected a build error"),
        Err(e) => {
            let loc = e.loc.expect("error has a location");
            format!("{}:{}: {}", loc.line, loc.col, e.message)
        }
    }
}

pub fn diff(res: &dyn Resource, t: &dyn Transport) -> std::result::Result<Vec<Change>, String> {
    let probes = res.probes();
    let answers = t.observe(&probes);
    res.diff(&Observed {
        answers: &answers,
        probes: &probes,
    })
}

/// Observes afresh and applies, as apply mode does for one task.
pub fn apply(res: &dyn Resource, t: &dyn Transport) -> std::result::Result<(), String> {
    let probes = res.probes();
    let answers = t.observe(&probes);
    res.apply(
        &Observed {
            answers: &answers,
            probes: &probes,
        },
        t,
    )
}

/// Diffs, applies, checks the result is in sync and that applying again writes nothing.
/// Returns the changes the first diff reported.
pub fn converge(res: &dyn Resource, t: &Local, root: &Path) -> Vec<Change> {
    let probes = res.probes();
    let answers = t.observe(&probes);
    let obs = Observed {
        answers: &answers,
        probes: &probes,
    };
    let changes = res.diff(&obs).expect("diff");
    res.apply(&obs, t).expect("apply");
    assert_eq!(
        diff(res, t).expect("diff after apply"),
        Vec::new(),
        "in sync after apply"
    );

    let inodes = |res: &dyn Resource| -> Vec<Option<u64>> {
        let rel = |p: &str| root.join(p.trim_start_matches('/'));
        res.paths()
            .iter()
            .map(|p| std::fs::metadata(rel(p)).ok().map(|m| m.ino()))
            .collect()
    };
    let before = inodes(res);
    let answers = t.observe(&probes);
    res.apply(
        &Observed {
            answers: &answers,
            probes: &probes,
        },
        t,
    )
    .expect("second apply");
    assert_eq!(inodes(res), before, "a second apply rewrites nothing");
    changes
}

/// Only the `what` of each change.
pub fn whats(changes: &[Change]) -> Vec<&str> {
    changes.iter().map(|c| c.what.as_str()).collect()
}

/// The unified diff of the "content" change.
pub fn content_diff(changes: &[Change]) -> &str {
    changes
        .iter()
        .find(|c| c.what == "content")
        .and_then(|c| c.diff.as_deref())
        .expect("a content change")
}
