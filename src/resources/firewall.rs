//! `firewall`: not written yet.

use crate::error::{Error, Result};
use crate::resource::{BuildCtx, Params, Resource};

pub struct Firewall;

impl Firewall {
    pub fn build(p: &Params, _ctx: &BuildCtx) -> Result<Box<dyn Resource>> {
        Err(Error::at(p.loc(), "`firewall` is not available yet"))
    }
}
