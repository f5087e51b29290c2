//! `permissions`: not written yet.

use crate::error::{Error, Result};
use crate::resource::{BuildCtx, Params, Resource};

pub struct Permissions;

impl Permissions {
    pub fn build(p: &Params, _ctx: &BuildCtx) -> Result<Box<dyn Resource>> {
        Err(Error::at(p.loc(), "`permissions` is not available yet"))
    }
}
