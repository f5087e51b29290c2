//! `sshd`: not written yet.

use crate::error::{Error, Result};
use crate::resource::{BuildCtx, Params, Resource};

pub struct Sshd;

impl Sshd {
    pub fn build(p: &Params, _ctx: &BuildCtx) -> Result<Box<dyn Resource>> {
        Err(Error::at(p.loc(), "`sshd` is not available yet"))
    }
}
