//! Where playbook, module and template files come from: the disk, or the copies built into SLICE.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use include_dir::{include_dir, Dir};

use crate::error::{Error, Loc, Result, Source};

/// The modules and playbooks shipped with SLICE, so the binary works with nothing beside it.
static BUILTIN_MODULES: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/modules");
static BUILTIN_PLAYBOOKS: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/playbooks");

/// A folder that files are named relative to.
#[derive(Clone, Debug)]
pub enum Origin {
    Disk(PathBuf),
    /// A folder inside the built-in copies (`modules` or `playbooks`, then the folder).
    Builtin(&'static str, &'static Dir<'static>),
}

impl Origin {
    /// The built-in playbooks folder.
    pub fn builtin_playbooks() -> Origin {
        Origin::Builtin("playbooks", &BUILTIN_PLAYBOOKS)
    }

    /// Reads `rel` in this folder. `loc` is the place that named the file, for the error.
    pub fn read(&self, rel: &str, loc: Option<&Loc>) -> Result<(String, Vec<u8>)> {
        let fail = |msg: String| match loc {
            Some(l) => Error::at(l, msg),
            None => Error::new(msg),
        };
        if Path::new(rel).is_absolute() || rel.split('/').any(|c| c == "..") {
            return Err(fail(format!(
                "`{rel}` must be a path inside the playbook's or module's folder"
            )));
        }
        match self {
            Origin::Disk(dir) => {
                let p = dir.join(rel);
                // Read the path as given (a symbolic link may make `..` mean something else);
                // only the name shown is tidied.
                let name = tidy(&p).display().to_string();
                std::fs::read(&p)
                    .map(|d| (name.clone(), d))
                    .map_err(|e| fail(format!("cannot read {name}: {e}")))
            }
            Origin::Builtin(top, dir) => {
                let path = dir.path().join(rel);
                let name = format!("builtin:{top}/{}", path.display());
                match dir.get_file(&path) {
                    Some(f) => Ok((name, f.contents().to_vec())),
                    None => Err(fail(format!("{name} does not exist"))),
                }
            }
        }
    }

    /// Reads a UTF-8 text file as a [`Source`] for error messages.
    pub fn source(&self, rel: &str, loc: Option<&Loc>) -> Result<Arc<Source>> {
        let (name, data) = self.read(rel, loc)?;
        let text =
            String::from_utf8(data).map_err(|_| Error::new(format!("{name} is not UTF-8 text")))?;
        Ok(Source::new(name, text))
    }

    fn has(&self, rel: &str) -> bool {
        match self {
            Origin::Disk(d) => d.join(rel).is_file(),
            Origin::Builtin(_, dir) => dir.get_file(dir.path().join(rel)).is_some(),
        }
    }
}

pub fn builtin_playbook_names() -> Vec<&'static str> {
    BUILTIN_PLAYBOOKS
        .files()
        .filter_map(|f| f.path().to_str())
        .filter(|p| p.ends_with(".yml"))
        .collect()
}

/// Removes `.` and folds `dir/..` without touching the disk, so paths in messages read well:
/// `./playbooks/../modules/x` becomes `modules/x`.
pub fn tidy(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out: Vec<Component> = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.is_empty() {
        return PathBuf::from(".");
    }
    out.iter().collect()
}

/// Finds `<name>/module.yml`: first in the given folders, then among the built-in modules.
pub fn find_module(name: &str, search: &[PathBuf]) -> Option<Origin> {
    search
        .iter()
        .map(|d| Origin::Disk(d.join(name)))
        .chain(
            BUILTIN_MODULES
                .get_dir(name)
                .map(|d| Origin::Builtin("modules", d)),
        )
        .find(|o| o.has("module.yml"))
}

pub fn builtin_module_names() -> Vec<&'static str> {
    BUILTIN_MODULES
        .dirs()
        .filter_map(|d| d.path().to_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tidy_folds_dots_lexically() {
        assert_eq!(
            tidy(Path::new("./playbooks/../modules/x")),
            PathBuf::from("modules/x")
        );
        assert_eq!(tidy(Path::new("../modules")), PathBuf::from("../modules"));
        assert_eq!(tidy(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert_eq!(tidy(Path::new("./")), PathBuf::from("."));
    }
}
