//! The load generator end to end, against the real server: a short `loadgen run`
//! starts `leadroute`, measures every row, and reports them with no failed request.
//! Its figures are not checked (a debug build on a shared machine measures nothing);
//! that it keeps working is.

use std::path::PathBuf;
use std::process::Command;

/// The server binary. `cargo test --workspace` builds it for the server's own
/// end-to-end tests, into the same directory as this package's binaries.
fn leadroute() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_loadgen"))
        .with_file_name(format!("leadroute{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: run the workspace's tests (`cargo test --workspace`), or build it \
         first (`cargo build -p leadroute-admin-api`)",
        path.display()
    );
    path
}

/// One row of the report's table.
struct Row {
    run: String,
    items_per_second: f64,
    errors: u64,
    statuses: String,
}

/// The table rows of a `loadgen run` report (`| run | items/s | requests/s | p50 µs |
/// p99 µs | p99.9 µs | errors | statuses | machine idle % | steal % |`).
fn rows(report: &str) -> Vec<Row> {
    report
        .lines()
        .filter(|l| l.starts_with("| echo") || l.starts_with("| leadroute"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            assert_eq!(cells.len(), 10, "a row of ten cells: {l}");
            for machine in &cells[8..] {
                assert!(
                    *machine == "–"
                        || machine
                            .parse::<f64>()
                            .is_ok_and(|p| (0.0..=100.0).contains(&p)),
                    "idle and steal are percentages: {l}"
                );
            }
            Row {
                run: cells[0].to_string(),
                items_per_second: cells[1].parse().expect("items/s is a number"),
                errors: cells[6].parse().expect("errors is a number"),
                statuses: cells[7].to_string(),
            }
        })
        .collect()
}

#[test]
fn a_short_run_measures_every_row_with_no_failed_request() {
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .arg("run")
        .arg("--leadroute")
        .arg(leadroute())
        .args([
            "--seconds",
            "1",
            "--connections",
            "4",
            "--max-connections",
            "4",
        ])
        .args([
            "--open-connections",
            "4",
            "--batch-connections",
            "2",
            "--batch",
            "10",
        ])
        .output()
        .expect("loadgen starts");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "loadgen failed: {}\n{report}",
        String::from_utf8_lossy(&output.stderr)
    );

    let rows = rows(&report);
    let kinds = [
        "echo ceiling",
        "leadroute POST /v1/leads (closed loop",
        "leadroute POST /v1/leads (open loop",
        "leadroute POST /v1/leads/batch",
    ];
    for kind in kinds {
        assert!(
            rows.iter().any(|r| r.run.starts_with(kind)),
            "no `{kind}` row in:\n{report}"
        );
    }
    for row in &rows {
        assert_eq!(row.errors, 0, "failed requests in `{}`:\n{report}", row.run);
        assert!(
            row.items_per_second > 0.0,
            "nothing measured in `{}`",
            row.run
        );
        // Every answer a success: new leads 201, repeats and batches 200.
        let only_success = row
            .statuses
            .trim_matches(|c| c == '{' || c == '}')
            .split(", ")
            .all(|s| s.starts_with("200:") || s.starts_with("201:"));
        assert!(only_success, "`{}` answered {}", row.run, row.statuses);
        if row.run.starts_with("leadroute POST /v1/leads (") {
            assert!(
                row.statuses.contains("201:"),
                "no lead stored in `{}`",
                row.run
            );
        }
    }
    assert!(
        report.contains("the server's own means (ms, from /metrics): HTTP `POST /v1/leads` "),
        "no account of the server's own time in:\n{report}"
    );
    assert!(
        report.contains("durable leads/s: "),
        "no summary line in:\n{report}"
    );
    // Where `/proc` can be read, every row of the server says what its threads did.
    if std::path::Path::new("/proc/self/task").exists() {
        for row in [
            "single, closed loop, 4 conns",
            "open loop at ",
            "batch, closed loop, 2 conns",
        ] {
            let line = report
                .lines()
                .find(|l| l.starts_with(&format!("- {row}")))
                .unwrap_or_else(|| panic!("no threads line for `{row}` in:\n{report}"));
            assert!(line.contains(" on CPU / "), "{line}");
        }
    }
}
