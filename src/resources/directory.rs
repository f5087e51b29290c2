//! `directory`: a directory that exists with a mode and owner, or does not exist.

use crate::error::Result;
use crate::resource::{BuildCtx, Change, Observed, Params, Resource};
use crate::resources::Meta;
use crate::transport::{Attrs, FileType, Probe, Transport};

pub struct Directory {
    path: String,
    present: bool,
    meta: Meta,
}

impl Directory {
    pub fn build(p: &Params, _ctx: &BuildCtx) -> Result<Box<dyn Resource>> {
        let d = Directory {
            path: p.path("path")?,
            present: p.choice("state", &["present", "absent"], "present")? == "present",
            meta: Meta::from_params(p)?,
        };
        p.finish()?;
        Ok(Box::new(d))
    }
}

impl Directory {
    /// Ancestors below `/`, nearest first: `/a/b/c` gives `/a/b`, `/a`.
    fn parents(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut p = self.path.as_str();
        while let Some(i) = p.rfind('/').filter(|i| *i > 0) {
            p = &p[..i];
            out.push(p.to_string());
        }
        out
    }

    /// Missing ancestors, outermost first (the order to create them in).
    fn missing_parents(&self, obs: &Observed) -> Result<Vec<String>, String> {
        let first = 1 + self.meta.probes().len();
        let mut missing = Vec::new();
        for (k, parent) in self.parents().into_iter().enumerate() {
            match obs.stat(first + k)? {
                None => missing.push(parent),
                Some(s) if s.kind == FileType::Dir => break,
                Some(s) => {
                    return Err(format!(
                        "{parent} is {}, not a directory",
                        s.kind.describe()
                    ))
                }
            }
        }
        missing.reverse();
        Ok(missing)
    }
}

impl Resource for Directory {
    fn target(&self) -> String {
        self.path.clone()
    }

    fn paths(&self) -> Vec<&str> {
        vec![&self.path]
    }

    fn creates_dir(&self) -> Option<&str> {
        self.present.then_some(self.path.as_str())
    }

    fn probes(&self) -> Vec<Probe> {
        let mut v = vec![Probe::Stat(self.path.clone())];
        v.extend(self.meta.probes());
        // Parents too, so missing ones can be created like `mkdir -p` does.
        if self.present {
            v.extend(self.parents().into_iter().map(Probe::Stat));
        }
        v
    }

    fn diff(&self, obs: &Observed) -> Result<Vec<Change>, String> {
        let stat = obs.stat(0)?;
        if !self.present {
            return Ok(match stat {
                None => Vec::new(),
                Some(s) if s.kind == FileType::Dir => vec![Change::new(
                    "state",
                    Some("present".into()),
                    Some("absent".into()),
                )],
                Some(s) => {
                    return Err(format!(
                        "{} is {}, not a directory; leaving it alone",
                        self.path,
                        s.kind.describe()
                    ))
                }
            });
        }
        let (want, accounts) = self.meta.resolve(obs, 1)?;
        match stat {
            None => {
                let mut v = Meta::presence(None, "directory", &want, &accounts);
                let missing = self.missing_parents(obs)?;
                if !missing.is_empty() {
                    let parents = Change::new("parent directories", None, Some(missing.join(", ")));
                    v.insert(1, parents);
                }
                Ok(v)
            }
            Some(s) if s.kind == FileType::Dir => Ok(Meta::changes(&want, s, &accounts)),
            Some(s) => Err(format!(
                "{} is {}, not a directory; not replacing it",
                self.path,
                s.kind.describe()
            )),
        }
    }

    fn apply(&self, obs: &Observed, t: &dyn Transport) -> Result<(), String> {
        let stat = obs.stat(0)?;
        let err = |e: std::io::Error| format!("{}: {e}", self.path);
        if !self.present {
            if stat.is_some() {
                t.remove(&self.path).map_err(|e| match e.kind() {
                    std::io::ErrorKind::DirectoryNotEmpty => format!(
                        "{} is not empty; SLICE removes only empty directories",
                        self.path
                    ),
                    _ => err(e),
                })?;
            }
            return Ok(());
        }
        let (want, _) = self.meta.resolve(obs, 1)?;
        match stat {
            None => {
                for parent in self.missing_parents(obs)? {
                    t.mkdir(&parent, &Attrs::default())
                        .map_err(|e| format!("{parent}: {e}"))?;
                }
                t.mkdir(&self.path, &want).map_err(err)
            }
            Some(s) => t.set_attrs(&self.path, &Meta::fixes(&want, s)).map_err(err),
        }
    }
}
