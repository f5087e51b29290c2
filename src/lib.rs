//! SLICE: declarative hardening of Docker container hosts. Playbook → graph → engine → resources → transport.

pub mod cli;
pub mod engine;
pub mod error;
pub mod facts;
pub mod fleet;
pub mod graph;
pub mod inventory;
pub mod playbook;
pub mod report;
pub mod resource;
pub mod resources;
pub mod run;
pub mod transport;
pub mod yaml;
