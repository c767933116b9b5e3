//! `leadroute`: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;
use leadroute_admin_api::cli::{self, Cli};

/// jemalloc, not the system allocator: measured faster for this workload (sled
/// copies a node per write; memory is freed on other threads than allocated it).
/// See `benches/README.md`, "Allocator, rep records once per group, and a pipelined
/// flush".
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    match cli::run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
