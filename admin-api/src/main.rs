//! `leadroute`: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;
use leadroute_admin_api::cli::{self, Cli};

fn main() -> ExitCode {
    match cli::run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
