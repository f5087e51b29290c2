//! SLICE: declarative hardening of Docker container hosts. Playbook → graph → engine → resources → transport.

pub mod error;
pub mod resource;
pub mod resources;
pub mod transport;
pub mod yaml;
