//! The command line: subcommands and options (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "slice",
    version,
    about = "Declarative hardening for Docker container hosts: report drift, apply a playbook",
    after_help = "Without a PLAYBOOK, SLICE uses its built-in container-host.yml.\n\
                  Exit codes: 0 in sync / success, 1 could not start, 2 drift (check) or changes \
                  (apply --detailed-exitcodes), 4 task or host failures, 6 both.\n\
                  Environment: SLICE_BECOME_PASSWORD (sudo password), SLICE_SSH_PASSPHRASE (key passphrase)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Report the drift between the target and the playbook; change nothing.
    Check(RunArgs),
    /// Make the target match the playbook, then verify that it does.
    Apply {
        #[command(flatten)]
        run: RunArgs,
        /// Also exit 2 when something was changed (6 with failures), as Puppet does.
        #[arg(long)]
        detailed_exitcodes: bool,
    },
    /// Print the tasks in the order they would run, with what each waits for.
    Plan(RunArgs),
    /// Print the task graph in Graphviz form (`--format dot`).
    Graph(RunArgs),
    /// Parse and plan only: check the playbook and its modules without touching any host.
    Validate(RunArgs),
    /// Print what SLICE knows about the target: OS, package manager, init, Docker, LSMs.
    Facts(FactsArgs),
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The playbook file, or the name of a built-in one (default: container-host.yml).
    pub playbook: Option<PathBuf>,

    #[command(flatten)]
    pub target: TargetArgs,

    /// Set a variable, overriding every other definition; the value is read as YAML (repeatable).
    #[arg(short = 'e', long = "extra-var", value_name = "KEY=VALUE")]
    pub extra: Vec<String>,

    /// Run only tasks with one of these tags (comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    pub tags: Vec<String>,

    /// Run only tasks at this level or stronger: must, should (must + should), can (all).
    #[arg(long, value_parser = ["must", "should", "can"])]
    pub level: Option<String>,

    /// Look for modules in this folder first (repeatable).
    #[arg(long = "module-path", value_name = "DIR")]
    pub module_path: Vec<PathBuf>,

    /// Report format: human, json (check, apply, plan), dot (graph).
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,

    /// Write the report to this file instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Show timings and where each task is defined.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// Which hosts to work on, and how to reach them.
#[derive(Args, Debug, Clone)]
pub struct TargetArgs {
    /// Work on an offline root directory (an image, a mounted disk) instead of this machine.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Work on the hosts of this Ansible YAML inventory, over SSH.
    #[arg(short = 'i', long, value_name = "FILE", conflicts_with = "root")]
    pub inventory: Option<PathBuf>,

    /// Only these inventory hosts or groups: names, globs, `!exclude`, `&intersect`, comma-separated.
    #[arg(short = 'l', long, value_name = "PATTERN", requires = "inventory")]
    pub limit: Option<String>,

    /// How many hosts to work on at once.
    #[arg(short = 'f', long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..))]
    pub forks: u16,

    /// Record the host key of a host seen for the first time (a changed key is always refused).
    #[arg(long)]
    pub accept_new_host_keys: bool,

    /// An ssh_config file to read instead of ~/.ssh/config.
    #[arg(long, value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,

    /// Seconds to wait for a host to accept the connection.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub connect_timeout: u64,

    /// Seconds any one remote command may take.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub command_timeout: u64,

    /// Seconds after which a host undoes a firewall or sshd change by itself, unless SLICE can
    /// still log in with a new connection.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub revert_after: u64,

    /// Seconds to wait for another SLICE run on the same host to finish.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub lock_wait: u64,
}

/// `slice facts`: only a target and a report.
#[derive(Args, Debug, Clone)]
pub struct FactsArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    /// Report format: human or json.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,

    /// Write the report to this file instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Human,
    Json,
    /// Graphviz, for `slice graph`.
    Dot,
}
