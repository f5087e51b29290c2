//! `docker_daemon`: not written yet.

use crate::error::{Error, Result};
use crate::resource::{BuildCtx, Params, Resource};

pub struct DockerDaemon;

impl DockerDaemon {
    pub fn build(p: &Params, _ctx: &BuildCtx) -> Result<Box<dyn Resource>> {
        Err(Error::at(p.loc(), "`docker_daemon` is not available yet"))
    }
}
