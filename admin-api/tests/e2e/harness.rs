//! Runs the real `leadroute` binary on 127.0.0.1:0 with a temp data dir, and talks
//! to it with a plain HTTP client.
//!
//! The server announces `listening on ADDR` on stdout; the harness reads that line
//! (no readiness polling). Every wait is bounded, and a server still running when its
//! [`Server`] is dropped is killed and reaped.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::catalogue;

/// Longest a server may take to start or to stop.
const DEADLINE: Duration = Duration::from_secs(60);

/// A token long enough to be accepted.
pub const ADMIN: &str = "admin-secret-0123456789abcdef";
/// Another one.
pub const INTAKE: &str = "intake-secret-0123456789abcdef";

/// The binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_leadroute")
}

/// A command for the binary with no `LEADROUTE_*` or `RUST_LOG` from the outside.
pub fn command() -> Command {
    let mut cmd = Command::new(binary());
    for (key, _) in std::env::vars() {
        if key.starts_with("LEADROUTE_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// What [`Server::launch`] waits for.
enum Until {
    /// The `listening on` line: the store is open, the server ready.
    Ready,
    /// The `bound` log line: the port answers, the store may still be opening.
    Bound,
}

/// A running server.
pub struct Server {
    child: Option<Child>,
    /// Its address.
    pub addr: SocketAddr,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    /// The threads reading stdout and stderr; they end when the process does.
    readers: Vec<std::thread::JoinHandle<()>>,
}

/// How to start a server.
pub struct Options<'a> {
    /// Extra arguments after `serve --listen 127.0.0.1:0 --data-dir DIR`.
    pub args: &'a [&'a str],
    /// Environment variables.
    pub env: &'a [(&'a str, &'a str)],
}

impl Server {
    /// Starts a server on `data_dir` with no tokens.
    pub fn start(data_dir: &Path) -> Server {
        Server::start_with(
            data_dir,
            Options {
                args: &[],
                env: &[],
            },
        )
    }

    /// Starts a server on `data_dir` with both tokens set.
    pub fn start_with_tokens(data_dir: &Path) -> Server {
        Server::start_with(
            data_dir,
            Options {
                args: &[],
                env: &[
                    ("LEADROUTE_ADMIN_TOKEN", ADMIN),
                    ("LEADROUTE_INTAKE_TOKEN", INTAKE),
                ],
            },
        )
    }

    /// Starts a server and waits for its `listening on` line: ready.
    pub fn start_with(data_dir: &Path, options: Options<'_>) -> Server {
        Server::launch("serve", data_dir, options, Until::Ready)
    }

    /// Starts a server logging JSON (`--log-format json` is added) with the
    /// environment `env`, and returns once its log says it is bound, maybe before its
    /// store is open.
    pub fn start_bound(data_dir: &Path, env: &[(&str, &str)]) -> Server {
        let options = Options {
            args: &["--log-format", "json"],
            env,
        };
        Server::launch("serve", data_dir, options, Until::Bound)
    }

    /// Starts `leadroute demo` (the server with the demo organisation) and waits until
    /// it is ready.
    pub fn start_demo_command(data_dir: &Path) -> Server {
        let options = Options {
            args: &[],
            env: &[],
        };
        Server::launch("demo", data_dir, options, Until::Ready)
    }

    /// Runs `subcommand --listen 127.0.0.1:0 --data-dir DIR` and the options; waits
    /// `until` it knows the address.
    fn launch(subcommand: &str, data_dir: &Path, options: Options<'_>, until: Until) -> Server {
        let mut cmd = command();
        cmd.arg(subcommand)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .args(options.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in options.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("the binary starts");
        let (stderr, stderr_reader) = collect(child.stderr.take().unwrap());
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(String::new()));
        let seen = lines.clone();
        let stdout_reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                seen.lock().unwrap().push_str(&format!("{line}\n"));
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        let mut server = Server {
            child: Some(child),
            addr: "0.0.0.0:0".parse().unwrap(),
            stdout: lines,
            stderr,
            readers: vec![stdout_reader, stderr_reader],
        };
        let addr = match until {
            Until::Ready => rx.recv_timeout(DEADLINE).ok(),
            Until::Bound => {
                let deadline = std::time::Instant::now() + DEADLINE;
                loop {
                    let bound = server.stderr().lines().find_map(|l| {
                        let line: Value = serde_json::from_str(l).ok()?;
                        let message = line["message"].as_str()?;
                        message
                            .starts_with("bound")
                            .then(|| line["addr"].as_str())?
                            .map(String::from)
                    });
                    let exited = server
                        .child
                        .as_mut()
                        .is_some_and(|c| !matches!(c.try_wait(), Ok(None)));
                    if bound.is_some() || exited || std::time::Instant::now() > deadline {
                        break bound;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        };
        match addr {
            Some(addr) => server.addr = addr.parse().expect("a socket address"),
            None => {
                let status = server.kill();
                panic!(
                    "the server did not announce its address ({status:?}); stderr:\n{}",
                    server.stderr()
                );
            }
        }
        server
    }

    /// The URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Everything the server printed on stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Everything the server logged so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.exit_status()
    }

    /// Sends `signal`, without waiting.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = self.child.as_ref().expect("running").id() as libc::pid_t;
        // SAFETY: signalling our own child, which has not been reaped yet.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// Waits (bounded) for the server to exit; then everything it printed has been
    /// read ([`Server::stdout`], [`Server::stderr`]).
    pub fn exit_status(&mut self) -> ExitStatus {
        let child = self.child.take().expect("running");
        let status = wait(child, DEADLINE);
        let status = status
            .unwrap_or_else(|| panic!("no exit within {DEADLINE:?}; stderr:\n{}", self.stderr()));
        // The pipes closed with the process, so the readers are at their end.
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        status
    }

    /// Kills the server with SIGKILL (no drain, no flush) and reaps it.
    pub fn sigkill(mut self) -> Option<ExitStatus> {
        self.kill()
    }

    fn kill(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        // `Child::kill` is SIGKILL on Unix.
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits for `child` at most `deadline`; kills it (and returns `None`) past that.
pub fn wait(mut child: Child, deadline: Duration) -> Option<ExitStatus> {
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(deadline) {
        Ok(status) => {
            let _ = waiter.join();
            status.ok()
        }
        Err(_) => {
            // SAFETY: the waiter thread has not reaped it (it would have answered).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = waiter.join();
            None
        }
    }
}

/// Collects a pipe into a string, in the background; returns it and the reading
/// thread, which ends at the pipe's end.
fn collect(
    mut pipe: impl Read + Send + 'static,
) -> (Arc<Mutex<String>>, std::thread::JoinHandle<()>) {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    (text, reader)
}

/// Runs the binary with `args` to completion (bounded); returns status, stdout, stderr.
pub fn run(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let mut cmd = command();
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("the binary starts");
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let out = read_all(Box::new(child.stdout.take().unwrap()));
    let err = read_all(Box::new(child.stderr.take().unwrap()));
    let status = wait(child, DEADLINE).expect("the command finishes");
    // The pipes close when the process exits, so these end.
    (status, out.join().unwrap(), err.join().unwrap())
}

/// Waits (bounded) until `check` holds, looking again every 10 ms.
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + DEADLINE;
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A temp data dir.
pub fn data_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// The body as text.
    pub text: String,
    /// Headers we look at.
    pub www_authenticate: Option<String>,
    /// `x-request-id`.
    pub request_id: Option<String>,
    /// `retry-after`.
    pub retry_after: Option<String>,
}

impl Resp {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    /// The error code of a JSON error body.
    pub fn code(&self) -> String {
        let body = self.json();
        assert!(
            body["error"]["message"].is_string(),
            "an error body: {body}"
        );
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The error's field.
    pub fn field(&self) -> Option<String> {
        self.json()["error"]["field"].as_str().map(String::from)
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build()
}

/// Sends a request with a raw body.
pub fn raw(
    method: &str,
    url: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: Option<&[u8]>,
) -> Resp {
    let mut req = agent().request(method, url);
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    if let Some(ct) = content_type {
        req = req.set("Content-Type", ct);
    }
    let result = match body {
        Some(b) => req.send_bytes(b),
        None => req.call(),
    };
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let resp = Resp {
        status: response.status(),
        www_authenticate: response.header("www-authenticate").map(String::from),
        request_id: response.header("x-request-id").map(String::from),
        retry_after: response.header("retry-after").map(String::from),
        text: response.into_string().unwrap(),
    };
    catalogue::assert_documented(resp.status, resp.text.as_bytes());
    resp
}

/// Sends only the head of a request that declares a `len`-byte body and
/// `Expect: 100-continue`, and returns the server's first answer. The body is never
/// sent: a server that wants it answers `100`, which the caller's assertions reject.
/// (Sending megabytes to a server that has already refused them races its close.)
pub fn head_only(
    server: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    len: usize,
) -> Resp {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {len}\r\nExpect: 100-continue\r\nConnection: close\r\n",
        server.addr
    );
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {line:?}"));
    let (mut length, mut www_authenticate, mut request_id, mut retry_after) = (0, None, None, None);
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').unwrap();
        let value = value.trim().to_string();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse().unwrap(),
            "www-authenticate" => www_authenticate = Some(value),
            "x-request-id" => request_id = Some(value),
            "retry-after" => retry_after = Some(value),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    catalogue::assert_documented(status, &body);
    Resp {
        status,
        text: String::from_utf8(body).unwrap(),
        www_authenticate,
        request_id,
        retry_after,
    }
}

/// Sends a request with an optional JSON body.
pub fn call(method: &str, url: &str, token: Option<&str>, body: Option<&Value>) -> Resp {
    let bytes = body.map(|b| serde_json::to_vec(b).unwrap());
    let ct = body.map(|_| "application/json");
    raw(method, url, token, ct, bytes.as_deref())
}

/// Shorthands against one server, optionally with a token.
pub struct Api<'a> {
    /// The server.
    pub server: &'a Server,
    /// The token sent.
    pub token: Option<&'a str>,
}

impl Api<'_> {
    /// GET.
    pub fn get(&self, path: &str) -> Resp {
        call("GET", &self.server.url(path), self.token, None)
    }
    /// POST JSON.
    pub fn post(&self, path: &str, body: Value) -> Resp {
        call("POST", &self.server.url(path), self.token, Some(&body))
    }
    /// PUT JSON.
    pub fn put(&self, path: &str, body: Value) -> Resp {
        call("PUT", &self.server.url(path), self.token, Some(&body))
    }
    /// POST with no body.
    pub fn post_empty(&self, path: &str) -> Resp {
        call("POST", &self.server.url(path), self.token, None)
    }

    /// DELETE.
    pub fn delete(&self, path: &str) -> Resp {
        call("DELETE", &self.server.url(path), self.token, None)
    }

    /// Creates territory `id` owning `regions`.
    pub fn territory(&self, id: &str, regions: &[&str], default: bool) {
        let r = self.put(
            &format!("/admin/territories/{id}"),
            serde_json::json!({"name": id, "regions": regions, "default": default}),
        );
        assert!(matches!(r.status, 200 | 201), "{r:?}");
    }

    /// Creates rep `id` in `territory` with `capacity`.
    pub fn rep(&self, id: &str, territory: &str, capacity: u32) {
        let r = self.put(
            &format!("/admin/reps/{id}"),
            serde_json::json!({"name": id, "territories": [territory], "capacity": capacity}),
        );
        assert!(matches!(r.status, 200 | 201), "{r:?}");
    }

    /// Posts a lead with phone number `n` in `region`; returns the answer.
    pub fn lead(&self, n: u32, region: &str) -> Resp {
        self.post(
            "/v1/leads",
            serde_json::json!({"phone": format!("+86 139 {:04} {:04}", n / 10_000, n % 10_000),
                "region": region}),
        )
    }
}

/// Whether the `/metrics` text counts no routed lead: there are
/// `leadroute_leads_routed_total` series (a territory's exist at zero from its
/// creation), and every one reads 0.
pub fn nothing_routed(metrics: &str) -> bool {
    let routed: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("leadroute_leads_routed_total{"))
        .collect();
    !routed.is_empty() && routed.iter().all(|l| l.ends_with(" 0"))
}
