//! Runs the quick start of the top-level `README.md` as written: the serve command's
//! arguments, then each `curl` line, parsed and sent with a plain HTTP client. Only
//! the address changes (port 0, so tests never collide on 8080), and `LEAD_ID` is the
//! id the first answer gave.

use crate::harness::{Options, Resp, Server, data_dir, raw};

const DEFAULT_BASE: &str = "http://127.0.0.1:8080";
const RUN_PREFIX: &str = "cargo run --release -p leadroute-admin-api -- ";

/// The `## Quick start` section of the README.
fn quick_start() -> String {
    let readme = include_str!("../../../README.md");
    let start = readme
        .find("## Quick start")
        .expect("a quick start section");
    let rest = &readme[start + 3..];
    let end = rest.find("\n## ").unwrap_or(rest.len());
    rest[..end].to_string()
}

/// The shell lines inside ```sh blocks, with `\` continuations joined.
fn shell_lines(section: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut in_block = false;
    let mut current = String::new();
    for line in section.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if !in_block {
            continue;
        }
        let line = line.trim();
        if let Some(head) = line.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push_str(line);
            if !current.trim().is_empty() {
                lines.push(std::mem::take(&mut current));
            }
            current.clear();
        }
    }
    lines
}

/// Splits a shell line into words: single and double quotes, no expansions.
fn words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                for q in chars.by_ref() {
                    if q == '\'' {
                        break;
                    }
                    w.push(q);
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                while let Some(q) = chars.next() {
                    match q {
                        '"' => break,
                        '\\' => w.extend(chars.next()),
                        q => w.push(q),
                    }
                }
            }
            '#' if word.is_none() => break,
            c if c.is_whitespace() => words.extend(word.take()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

/// Sends one curl command line against `base`.
fn curl(line: &str, base: &str, lead_id: &str) -> Resp {
    let words = words(&line.replace(DEFAULT_BASE, base).replace("LEAD_ID", lead_id));
    assert_eq!(words[0], "curl");
    let (mut method, mut url, mut content_type, mut data) = (None, None, None, None);
    let mut args = words[1..].iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-s" | "-i" | "-sS" => {}
            "-X" => method = args.next().cloned(),
            "-H" => {
                let header = args.next().expect("a header");
                let (name, value) = header.split_once(':').expect("Name: value");
                assert!(
                    name.eq_ignore_ascii_case("content-type"),
                    "unexpected header {name}"
                );
                content_type = Some(value.trim().to_string());
            }
            "-d" | "--data" => data = args.next().cloned(),
            other if other.starts_with("http") => url = Some(other.to_string()),
            other => panic!("the quick-start test does not know curl's {other}"),
        }
    }
    let method = method.unwrap_or_else(|| if data.is_some() { "POST" } else { "GET" }.into());
    raw(
        &method,
        &url.expect("a URL"),
        None,
        content_type.as_deref(),
        data.as_deref().map(str::as_bytes),
    )
}

#[test]
fn the_readme_quick_start_works_as_written() {
    let lines = shell_lines(&quick_start());
    assert!(lines.len() >= 3, "{lines:?}");
    let serve = lines[0].strip_prefix(RUN_PREFIX).unwrap_or_else(|| {
        panic!(
            "the quick start starts with `{RUN_PREFIX}...`: {}",
            lines[0]
        )
    });
    let serve_args = words(serve);
    assert_eq!(serve_args[0], "serve");

    let dir = data_dir();
    let extra: Vec<&str> = serve_args[1..].iter().map(String::as_str).collect();
    let server = Server::start_with(
        dir.path(),
        Options {
            args: &extra,
            env: &[],
        },
    );
    let base = server.url("");

    let routed = curl(&lines[1], &base, "");
    assert_eq!(routed.status, 201, "{routed:?}");
    let routed = routed.json();
    assert_eq!(routed["status"], "assigned");
    assert!(routed["rep_id"].is_string());
    assert_eq!(routed["territory_id"], "east-sh");
    let lead_id = routed["lead_id"].as_str().unwrap();

    let read = curl(&lines[2], &base, lead_id);
    assert_eq!(read.status, 200, "{read:?}");
    let lead = read.json();
    assert_eq!(lead["rep_id"], routed["rep_id"]);
    assert_eq!(lead["history"][0]["type"], "routed");
    assert!(server.terminate().success());
}

#[test]
fn the_shell_parser_reads_what_the_readme_uses() {
    assert_eq!(
        words(r#"curl -s -H 'A: b c' -d '{"x": "y z"}' "q\"r" # comment"#),
        [
            "curl",
            "-s",
            "-H",
            "A: b c",
            "-d",
            r#"{"x": "y z"}"#,
            "q\"r"
        ]
    );
    assert_eq!(
        shell_lines("```sh\na \\\n  b\n```\ntext\n```sh\nc\n```\n"),
        ["a  b", "c"]
    );
}
