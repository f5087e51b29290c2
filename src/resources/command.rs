//! `command`: a shell command, run only when its guard (`creates`, `unless`) says it is needed.
//!
//! Without a guard SLICE cannot know whether the command is needed, so check mode reports it as
//! "would run", never as in sync. `unless` is run in check mode too: it must only read.

use crate::error::Result;
use crate::resource::{BuildCtx, Change, Observed, Params, Resource};
use crate::transport::{Probe, Transport};

pub struct Command {
    run: String,
    creates: Option<String>,
    unless: Option<String>,
}

impl Command {
    pub fn build(p: &Params, _ctx: &BuildCtx) -> Result<Box<dyn Resource>> {
        let c = Command {
            run: p.str("run")?,
            creates: p.opt_path("creates")?,
            unless: p.opt_str("unless")?,
        };
        p.finish()?;
        Ok(Box::new(c))
    }

    fn unless_at(&self) -> usize {
        usize::from(self.creates.is_some())
    }
}

impl Resource for Command {
    fn target(&self) -> String {
        self.run.clone()
    }

    fn probes(&self) -> Vec<Probe> {
        let mut v = Vec::new();
        if let Some(c) = &self.creates {
            v.push(Probe::Stat(c.clone()));
        }
        if let Some(u) = &self.unless {
            v.push(Probe::Run(u.clone()));
        }
        v
    }

    fn diff(&self, obs: &Observed) -> Result<Vec<Change>, String> {
        if self.creates.is_some() && obs.stat(0)?.is_some() {
            return Ok(Vec::new());
        }
        if self.unless.is_some() && obs.run(self.unless_at())?.success() {
            return Ok(Vec::new());
        }
        let why = match (&self.creates, &self.unless) {
            (Some(c), _) => format!("run ({c} does not exist)"),
            (None, Some(_)) => "run (`unless` failed)".to_string(),
            (None, None) => "run (no guard: cannot tell whether it is needed)".to_string(),
        };
        Ok(vec![Change::new(why, None, Some(self.run.clone()))])
    }

    fn apply(&self, _obs: &Observed, t: &dyn Transport) -> Result<(), String> {
        let out = t
            .run(&self.run)
            .map_err(|e| format!("cannot run `{}`: {e}", self.run))?;
        if !out.success() {
            return Err(format!(
                "`{}` exited with status {}: {}",
                self.run,
                out.status,
                out.message()
            ));
        }
        Ok(())
    }

    fn verifiable(&self) -> bool {
        self.creates.is_some() || self.unless.is_some()
    }
}
