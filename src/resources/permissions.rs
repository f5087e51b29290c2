//! `permissions`: the owner and mode of a path that something else creates (a socket, a unit
//! file, a certificate), never its contents. A mode can be exact or an upper bound ("0644 or
//! more restrictive", as the CIS benchmark words it), compared bit by bit, not as a number.

use crate::error::{Error, Result};
use crate::resource::{BuildCtx, Change, Observed, Params, Resource};
use crate::resources::Meta;
use crate::transport::{Attrs, FileType, Probe, Transport};

pub struct Permissions {
    path: String,
    meta: Meta,
    /// No permission bits beyond these: extra bits are drift and are removed.
    mode_max: Option<u32>,
    /// A missing path is a failure (otherwise there is nothing to check).
    required: bool,
}

impl Permissions {
    pub fn build(p: &Params, _ctx: &BuildCtx) -> Result<Box<dyn Resource>> {
        let r = Permissions {
            path: p.path("path")?,
            meta: Meta::from_params(p)?,
            mode_max: p.opt_mode("mode_max")?,
            required: p.opt_bool("required")?.unwrap_or(false),
        };
        if r.meta.mode.is_some() && r.mode_max.is_some() {
            return Err(Error::at(
                p.loc(),
                "give `mode` (exact) or `mode_max` (at most), not both",
            ));
        }
        if r.meta.mode.is_none()
            && r.mode_max.is_none()
            && r.meta.owner.is_none()
            && r.meta.group.is_none()
        {
            return Err(Error::at(
                p.loc(),
                "`permissions` needs at least one of `mode`, `mode_max`, `owner`, `group`",
            ));
        }
        p.finish()?;
        Ok(Box::new(r))
    }

    /// The attributes to set: the wanted ones, the bounded mode with its extra bits cleared.
    fn wanted(
        &self,
        obs: &Observed,
        current_mode: u32,
    ) -> Result<(Attrs, crate::resources::Accounts), String> {
        let (mut want, accounts) = self.meta.resolve(obs, 1)?;
        if let Some(max) = self.mode_max {
            // Special bits (setuid, setgid, sticky) count as bits beyond the bound too.
            let bounded = current_mode & max;
            if bounded != current_mode {
                want.mode = Some(bounded);
            }
        }
        Ok((want, accounts))
    }
}

impl Resource for Permissions {
    fn target(&self) -> String {
        self.path.clone()
    }

    fn paths(&self) -> Vec<&str> {
        vec![&self.path]
    }

    fn probes(&self) -> Vec<Probe> {
        let mut v = vec![Probe::Stat(self.path.clone())];
        v.extend(self.meta.probes());
        v
    }

    fn diff(&self, obs: &Observed) -> std::result::Result<Vec<Change>, String> {
        let Some(stat) = obs.stat(0)? else {
            return if self.required {
                Err(format!("{} does not exist", self.path))
            } else {
                Ok(Vec::new())
            };
        };
        if stat.kind == FileType::Symlink {
            return Err(format!(
                "{} is a symbolic link; name the path it points to",
                self.path
            ));
        }
        let (want, accounts) = self.wanted(obs, stat.mode)?;
        Ok(Meta::changes(&want, stat, &accounts))
    }

    fn apply(&self, obs: &Observed, t: &dyn Transport) -> std::result::Result<(), String> {
        let Some(stat) = obs.stat(0)? else {
            return Ok(());
        };
        let (want, _) = self.wanted(obs, stat.mode)?;
        t.set_attrs(&self.path, &Meta::fixes(&want, stat))
            .map_err(|e| format!("{}: {e}", self.path))
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixListener;

    use crate::resources::testing::{build, build_err, converge, diff, whats};
    use crate::transport::Local;

    fn root() -> (tempfile::TempDir, Local) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("run")).unwrap();
        let t = Local::with_root(dir.path()).unwrap();
        (dir, t)
    }

    #[test]
    fn an_upper_bound_removes_only_the_extra_bits() {
        let (dir, t) = root();
        let f = dir.path().join("run/unit");
        fs::write(&f, "x").unwrap();
        // Bits, not numbers: setuid and group execute go, the rest stays.
        fs::set_permissions(&f, fs::Permissions::from_mode(0o4750)).unwrap();
        let res = build(
            "permissions",
            "path: /run/unit\nmode_max: \"0644\"\n",
            false,
        )
        .unwrap();
        let changes = converge(res.as_ref(), &t, dir.path());
        assert_eq!(whats(&changes), ["mode"]);
        assert_eq!(changes[0].before.as_deref(), Some("4750"));
        assert_eq!(changes[0].after.as_deref(), Some("0640"));
        assert_eq!(
            fs::metadata(&f).unwrap().permissions().mode() & 0o7777,
            0o640
        );

        fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            diff(res.as_ref(), &t).unwrap(),
            [],
            "more restrictive is in sync"
        );
    }

    #[test]
    fn a_socket_gets_its_mode_and_a_missing_path_is_fine_unless_required() {
        let (dir, t) = root();
        let sock = dir.path().join("run/docker.sock");
        let _listener = UnixListener::bind(&sock).unwrap();
        fs::set_permissions(&sock, fs::Permissions::from_mode(0o666)).unwrap();
        let res = build(
            "permissions",
            "path: /run/docker.sock\nmode: \"0660\"\n",
            false,
        )
        .unwrap();
        converge(res.as_ref(), &t, dir.path());
        assert_eq!(
            fs::symlink_metadata(&sock).unwrap().permissions().mode() & 0o7777,
            0o660
        );

        let absent = build(
            "permissions",
            "path: /run/nothing\nmode_max: \"0644\"\n",
            false,
        )
        .unwrap();
        assert_eq!(diff(absent.as_ref(), &t).unwrap(), []);
        let required = build(
            "permissions",
            "path: /run/nothing\nmode_max: \"0644\"\nrequired: true\n",
            false,
        )
        .unwrap();
        assert_eq!(
            diff(required.as_ref(), &t).unwrap_err(),
            "/run/nothing does not exist"
        );
    }

    #[test]
    fn build_errors() {
        assert_eq!(
            build_err("permissions", "path: /x\n"),
            "1:1: `permissions` needs at least one of `mode`, `mode_max`, `owner`, `group`"
        );
        assert_eq!(
            build_err(
                "permissions",
                "path: /x\nmode: \"0644\"\nmode_max: \"0644\"\n"
            ),
            "1:1: give `mode` (exact) or `mode_max` (at most), not both"
        );
    }
}
