//! Structured logs: JSON lines on stderr, filtered by `RUST_LOG` over the configured
//! level, each request's lines carrying its `x-request-id`.

use serde_json::Value;

use crate::harness::{Api, Options, Server, data_dir, eventually};

#[test]
fn json_logs_carry_the_request_id_and_rust_log_beats_the_level() {
    let dir = data_dir();
    let mut server = Server::start_with(
        dir.path(),
        Options {
            // `error` alone would hide the request lines: `RUST_LOG` must win.
            args: &["--log-format", "json", "--log-level", "error"],
            env: &[("RUST_LOG", "info,tower_http=debug")],
        },
    );
    let api = Api {
        server: &server,
        token: None,
    };
    let r = api.get("/admin/reps/nobody");
    assert_eq!(r.status, 404);
    let id = r.request_id.expect("an x-request-id");

    let answered = |line: &Value| {
        line["span"]["request_id"] == id.as_str()
            && line["message"] == "finished processing request"
            && line["status"] == 404
    };
    eventually("a JSON line for the request, with its id", || {
        server
            .stderr()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|line| answered(&line))
    });
    server.signal(libc::SIGTERM);
    assert!(server.exit_status().success());
    // Exited, and its output read to the end: every line is whole.
    let stderr = server.stderr();
    let not_json: Vec<&str> = stderr
        .lines()
        .filter(|l| serde_json::from_str::<Value>(l).is_err())
        .collect();
    assert!(not_json.is_empty(), "lines that are not JSON: {not_json:?}");
    assert!(
        stderr.contains("\"leadroute serving\""),
        "info lines pass: {stderr}"
    );
}
