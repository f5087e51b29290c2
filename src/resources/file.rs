//! `file`: a regular file with given contents (inline, from a template, or copied from a source),
//! mode and owner; or no file at all.

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::resource::{text_diff, BuildCtx, Change, Observed, Params, Resource};
use crate::resources::Meta;
use crate::transport::{FileType, Probe, Transport};

pub struct File {
    path: String,
    present: bool,
    /// `None`: only make sure the file exists, whatever it holds.
    content: Option<Vec<u8>>,
    meta: Meta,
    /// Contents are secret: report digests, never text.
    sensitive: bool,
}

impl File {
    pub fn build(p: &Params, ctx: &BuildCtx) -> Result<Box<dyn Resource>> {
        let path = p.path("path")?;
        let present = p.choice("state", &["present", "absent"], "present")? == "present";
        let mut sources = Vec::new();
        if let Some(n) = p.node("content") {
            let text = n.scalar_text().ok_or_else(|| {
                p.error(
                    n,
                    format!("`content` must be a string, found {}", n.type_name()),
                )
            })?;
            sources.push((n, text.into_bytes()));
        }
        if let Some(n) = p.node("template") {
            let rel = n.scalar_text().unwrap_or_default();
            sources.push((n, ctx.files.template(&rel, &n.loc)?.into_bytes()));
        }
        if let Some(n) = p.node("source") {
            let rel = n.scalar_text().unwrap_or_default();
            sources.push((n, ctx.files.source(&rel, &n.loc)?));
        }
        if sources.len() > 1 {
            return Err(Error::at(
                &sources[1].0.loc,
                "give only one of `content`, `template` and `source`",
            ));
        }
        let f = File {
            path,
            present,
            content: sources.pop().map(|(_, c)| c),
            meta: Meta::from_params(p)?,
            sensitive: p.opt_bool("sensitive")?.unwrap_or(false),
        };
        if !f.present && f.content.is_some() {
            return Err(Error::at(
                p.loc(),
                "a file with `state: absent` takes no contents",
            ));
        }
        p.finish()?;
        Ok(Box::new(f))
    }

    fn content_change(&self, old: Option<&[u8]>, new: &[u8]) -> Option<Change> {
        if old.unwrap_or_default() == new {
            return None;
        }
        let old_text = std::str::from_utf8(old.unwrap_or_default()).ok();
        match (self.sensitive, old_text, std::str::from_utf8(new).ok()) {
            (false, Some(o), Some(n)) => {
                Some(Change::new("content", None, None).with_diff(text_diff(&self.path, o, n)))
            }
            _ => Some(Change::new("content", old.map(digest), Some(digest(new)))),
        }
    }
}

fn digest(data: &[u8]) -> String {
    let hash = Sha256::digest(data);
    let hex: String = hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}… ({} bytes)", data.len())
}

impl Resource for File {
    fn target(&self) -> String {
        self.path.clone()
    }

    fn paths(&self) -> Vec<&str> {
        vec![&self.path]
    }

    fn probes(&self) -> Vec<Probe> {
        let mut v = vec![
            Probe::Stat(self.path.clone()),
            Probe::Read(self.path.clone()),
        ];
        if self.content.is_none() {
            // Contents do not matter; do not read them.
            v[1] = Probe::Stat(self.path.clone());
        }
        v.extend(self.meta.probes());
        v
    }

    fn diff(&self, obs: &Observed) -> Result<Vec<Change>, String> {
        let stat = obs.stat(0)?;
        if let Some(s) = stat {
            if s.kind != FileType::File {
                return Err(format!(
                    "{} is {}, not a regular file; not replacing it",
                    self.path,
                    s.kind.describe()
                ));
            }
        }
        if !self.present {
            return Ok(match stat {
                None => Vec::new(),
                Some(_) => vec![Change::new(
                    "state",
                    Some("present".into()),
                    Some("absent".into()),
                )],
            });
        }
        let (want, accounts) = self.meta.resolve(obs, 2)?;
        let mut out = Vec::new();
        out.extend(Meta::presence(stat, "file", &want, &accounts));
        match (stat, &self.content) {
            (None, c) => out.extend(self.content_change(None, c.as_deref().unwrap_or_default())),
            (Some(_), Some(c)) => out.extend(self.content_change(obs.read(1)?, c)),
            (Some(_), None) => {}
        }
        Ok(out)
    }

    fn apply(&self, obs: &Observed, t: &dyn Transport) -> Result<(), String> {
        let err = |e: std::io::Error| format!("{}: {e}", self.path);
        let stat = obs.stat(0)?;
        if !self.present {
            return match stat {
                Some(_) => t.remove(&self.path).map_err(err),
                None => Ok(()),
            };
        }
        let (want, _) = self.meta.resolve(obs, 2)?;
        let stale = match (&self.content, stat) {
            (_, None) => true,
            (Some(c), Some(_)) => obs.read(1)? != Some(c.as_slice()),
            (None, Some(_)) => false,
        };
        if stale {
            t.write(
                &self.path,
                self.content.as_deref().unwrap_or_default(),
                &want,
            )
            .map_err(err)
        } else if let Some(s) = stat {
            t.set_attrs(&self.path, &Meta::fixes(&want, s)).map_err(err)
        } else {
            Ok(())
        }
    }
}
