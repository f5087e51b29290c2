//! `setuid`: not written yet.

use crate::error::{Error, Result};
use crate::resource::{BuildCtx, Params, Resource};

pub struct Setuid;

impl Setuid {
    pub fn build(p: &Params, _ctx: &BuildCtx) -> Result<Box<dyn Resource>> {
        Err(Error::at(p.loc(), "`setuid` is not available yet"))
    }
}
