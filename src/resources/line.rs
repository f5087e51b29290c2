//! `line`: placeholder until written.

use crate::error::{Error, Result};
use crate::resource::{BuildCtx, Params, Resource};

pub struct Line;

impl Line {
    pub fn build(p: &Params, _ctx: &BuildCtx) -> Result<Box<dyn Resource>> {
        Err(Error::at(p.loc(), "not yet"))
    }
}
