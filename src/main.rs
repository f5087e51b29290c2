//! The `slice` binary: parse the command line, run it, exit with its code.

use clap::Parser;

fn main() {
    let cli = slice::cli::Cli::parse();
    std::process::exit(slice::run::main_with(cli));
}
