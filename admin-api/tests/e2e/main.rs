//! End-to-end tests: the real `leadroute` binary on 127.0.0.1:0 with a temp data
//! dir, driven over HTTP (and through its CLI client subcommands).
//!
//! One test binary with a module per area, so the suite links once.

mod admin;
mod auth;
mod backup;
#[path = "../common/catalogue.rs"]
mod catalogue;
mod cli;
mod crash;
mod disk;
mod harness;
mod hostile;
mod intake;
mod logs;
mod overload;
mod plugins;
mod quickstart;
mod restart;
mod sla;
mod starting;
mod webhooks;

#[path = "../common/receiver.rs"]
mod receiver;
