//! The CLI subcommands that talk to a running server over HTTP: a summary for people
//! by default, the server's JSON with `--json` for scripts. A non-2xx answer prints
//! the error and exits 1.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use crate::dto::{BackupView, HistoryEventView, LeadView, PluginView, ReplayView, SimulationView};
use crate::error::ErrorBody;

/// How to print answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// A summary for people.
    Text,
    /// The server's JSON, pretty-printed.
    Json,
}

/// A client of one server.
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// A request body.
enum Body<'a> {
    Json(&'a Value),
    Wasm(&'a [u8]),
}

/// An answer: status and JSON body (`null` when empty).
struct Reply {
    status: u16,
    body: Value,
}

impl Client {
    /// Creates a client of the server at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str, token: Option<String>) -> Self {
        Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(60))
                .build(),
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Body<'_>>) -> anyhow::Result<Reply> {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.request(method, &url);
        if let Some(token) = &self.token {
            req = req.set("Authorization", &format!("Bearer {token}"));
        }
        let result = match body {
            Some(Body::Json(v)) => req.send_json(v),
            Some(Body::Wasm(bytes)) => req
                .set("Content-Type", "application/wasm")
                .send_bytes(bytes),
            None => req.call(),
        };
        let response = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(ureq::Error::Transport(t)) => {
                anyhow::bail!("cannot reach the server at {}: {t}", self.base)
            }
        };
        let status = response.status();
        let text = response
            .into_string()
            .with_context(|| format!("cannot read the answer to {method} {url}"))?;
        let body = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .with_context(|| format!("the answer to {method} {url} is not JSON: {text}"))?
        };
        Ok(Reply { status, body })
    }

    /// Prints `reply` as `out` asks, rendering a success with `render`.
    fn finish(
        reply: Reply,
        out: Output,
        render: impl FnOnce(Value) -> anyhow::Result<String>,
    ) -> anyhow::Result<ExitCode> {
        let ok = (200..300).contains(&reply.status);
        match (out, ok) {
            (Output::Json, _) => println!("{}", serde_json::to_string_pretty(&reply.body)?),
            (Output::Text, true) => print!("{}", render(reply.body)?),
            (Output::Text, false) => {
                eprintln!("error: {}", describe_error(reply.status, &reply.body))
            }
        }
        Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }

    /// Runs `leadroute lead get ID`.
    pub fn lead_get(&self, id: &str, out: Output) -> anyhow::Result<ExitCode> {
        let reply = self.call("GET", &format!("/v1/leads/{}", segment(id)), None)?;
        Self::finish(reply, out, |body| {
            Ok(render_lead(&serde_json::from_value(body)?))
        })
    }

    /// Runs `leadroute simulate FILE [--territory T] [--plugin NAME[@VERSION]]`.
    pub fn simulate(
        &self,
        file: &Path,
        territory: Option<&str>,
        plugin: Option<&str>,
        out: Output,
    ) -> anyhow::Result<ExitCode> {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let lead: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", file.display()))?;
        let mut body = serde_json::json!({ "lead": lead });
        if let Some(t) = territory {
            body["territory_id"] = Value::from(t);
        }
        if let Some(p) = plugin {
            body["plugin"] = match p.split_once('@') {
                Some((name, version)) => {
                    let version: u32 = version
                        .parse()
                        .with_context(|| format!("--plugin {p}: the version is not a number"))?;
                    serde_json::json!({ "name": name, "version": version })
                }
                None => serde_json::json!({ "name": p }),
            };
        }
        let reply = self.call("POST", "/admin/simulate", Some(Body::Json(&body)))?;
        Self::finish(reply, out, |body| {
            Ok(render_simulation(&serde_json::from_value(body)?))
        })
    }

    /// Runs `leadroute plugin push NAME FILE`.
    pub fn plugin_push(&self, name: &str, file: &Path, out: Output) -> anyhow::Result<ExitCode> {
        let wasm =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        let reply = self.call(
            "PUT",
            &format!("/admin/plugins/{}", segment(name)),
            Some(Body::Wasm(&wasm)),
        )?;
        Self::finish(reply, out, |body| {
            Ok(format!(
                "uploaded {} version {} ({} bytes, sha256 {}); it is now the active version\n",
                text(&body["name"]),
                text(&body["version"]),
                text(&body["size"]),
                text(&body["sha256"]),
            ))
        })
    }

    /// Runs `leadroute plugin list`.
    pub fn plugin_list(&self, out: Output) -> anyhow::Result<ExitCode> {
        let reply = self.call("GET", "/admin/plugins", None)?;
        Self::finish(reply, out, |body| {
            Ok(render_plugins(&serde_json::from_value::<Vec<PluginView>>(
                body,
            )?))
        })
    }

    /// Runs `leadroute plugin activate NAME VERSION`.
    pub fn plugin_activate(
        &self,
        name: &str,
        version: u32,
        out: Output,
    ) -> anyhow::Result<ExitCode> {
        let body = serde_json::json!({ "version": version });
        let reply = self.call(
            "POST",
            &format!("/admin/plugins/{}/activate", segment(name)),
            Some(Body::Json(&body)),
        )?;
        Self::finish(reply, out, |body| {
            Ok(format!(
                "{} now runs version {}\n",
                text(&body["name"]),
                text(&body["active_version"])
            ))
        })
    }

    /// Runs `leadroute plugin replay NAME VERSION [--territory T] [--limit N]`.
    pub fn plugin_replay(
        &self,
        name: &str,
        version: u32,
        territory: Option<&str>,
        limit: Option<u32>,
        out: Output,
    ) -> anyhow::Result<ExitCode> {
        let mut body = serde_json::json!({});
        if let Some(t) = territory {
            body["territory_id"] = Value::from(t);
        }
        if let Some(n) = limit {
            body["limit"] = Value::from(n);
        }
        let reply = self.call(
            "POST",
            &format!("/admin/plugins/{}/versions/{version}/replay", segment(name)),
            Some(Body::Json(&body)),
        )?;
        Self::finish(reply, out, |body| {
            Ok(render_replay(&serde_json::from_value(body)?))
        })
    }

    /// Runs `leadroute backup`. No time limit on the answer: the server answers once
    /// the file is durable, which may take minutes for a large store (the read of a
    /// million open leads took 20 s, and longer under heavy writes).
    pub fn backup(&self, out: Output) -> anyhow::Result<ExitCode> {
        let patient = Client {
            base: self.base.clone(),
            token: self.token.clone(),
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(10))
                .build(),
        };
        let reply = patient.call("POST", "/admin/backups", None)?;
        Self::finish(reply, out, |body| {
            let b: BackupView = serde_json::from_value(body)?;
            let mut text = format!(
                "backup written: {}\n  {} bytes, {} records ({} written while it was read); \
                 the committer paused {:.3} ms, {} ms in all\n",
                b.path, b.bytes, b.entries, b.captured, b.paused_ms, b.took_ms
            );
            for old in &b.removed {
                let _ = writeln!(text, "  removed, past backup_keep: {old}");
            }
            Ok(text)
        })
    }
}

/// Renders a replay report for people.
pub fn render_replay(r: &ReplayView) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}@{}: {} of {} decisions would change ({} leads examined, {} failed, {} skipped)",
        r.plugin,
        r.version,
        r.decisions_changed,
        r.decisions_examined,
        r.leads_examined,
        r.failures,
        r.skipped
    );
    for (reason, n) in &r.failures_by_reason {
        let _ = writeln!(s, "  failed    {n} × {reason}");
    }
    for d in &r.sample {
        let _ = writeln!(
            s,
            "  {}  lead {}  {} -> {}: {}",
            d.at, d.lead_id, d.actual_rep_id, d.replayed_rep_id, d.replayed_reason
        );
    }
    if (r.sample.len() as u64) < r.decisions_changed {
        let _ = writeln!(
            s,
            "  … and {} more",
            r.decisions_changed - r.sample.len() as u64
        );
    }
    s
}

/// Percent-encodes a path segment (ids are slugs, but a typo must not change the path).
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A JSON scalar as plain text (`-` for null).
fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn describe_error(status: u16, body: &Value) -> String {
    match serde_json::from_value::<ErrorBody>(body.clone()) {
        Ok(e) => {
            let field = e
                .error
                .field
                .map(|f| format!(" (field {f})"))
                .unwrap_or_default();
            format!("HTTP {status} {}: {}{field}", e.error.code, e.error.message)
        }
        Err(_) => format!("HTTP {status}: {body}"),
    }
}

fn opt(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("-")
}

/// Renders a lead for people: one header, the contact, then the history.
pub fn render_lead(lead: &LeadView) -> String {
    let mut s = String::new();
    let placement = match &lead.rep_id {
        Some(rep) => format!("assigned to {rep} in {}", lead.territory_id),
        None => format!("in {}", lead.territory_id),
    };
    let status = serde_json::to_value(lead.status)
        .map(|v| text(&v))
        .unwrap_or_default();
    let _ = write!(s, "lead {}  {status}", lead.lead_id);
    if let Some(o) = lead.outcome {
        let _ = write!(
            s,
            " ({})",
            text(&serde_json::to_value(o).unwrap_or_default())
        );
    }
    let _ = writeln!(s, "  {placement}");
    if let Some(stage) = lead.stage {
        let _ = writeln!(
            s,
            "  stage     {}",
            text(&serde_json::to_value(stage).unwrap_or_default())
        );
    }
    let contact: Vec<&str> = [
        &lead.name,
        &lead.company,
        &lead.phone,
        &lead.email,
        &lead.external_id,
    ]
    .into_iter()
    .filter_map(|v| v.as_deref())
    .collect();
    let _ = writeln!(s, "  contact   {}", contact.join(" · "));
    let _ = writeln!(
        s,
        "  region    {}  industry {}  purchase {}  source {}",
        opt(&lead.region),
        opt(&lead.industry),
        lead.purchase_amount,
        opt(&lead.source)
    );
    let _ = writeln!(s, "  received  {}", lead.received_at);
    let _ = writeln!(s, "history");
    for h in &lead.history {
        let what = match &h.event {
            HistoryEventView::Routed {
                territory_id,
                rep_id,
                decided_by,
                reason,
                candidates,
                fallback,
                fallback_detail,
                from_queue,
                ..
            } => {
                let mut w = format!(
                    "routed      to {rep_id} in {territory_id} by {decided_by}: {reason} \
                     ({} candidates)",
                    candidates.len()
                );
                if let Some(f) = fallback_detail.as_ref().or(fallback.as_ref()) {
                    let _ = write!(w, " [fallback: {f}]");
                }
                if *from_queue {
                    w.push_str(" [from the queue]");
                }
                w
            }
            HistoryEventView::Queued {
                territory_id,
                reason,
            } => format!("queued      in {territory_id}: {reason}"),
            HistoryEventView::Duplicate { matched, source } => format!(
                "duplicate   same {} (source {})",
                matched.join(" and "),
                opt(source)
            ),
            HistoryEventView::Touched => "touched".to_string(),
            HistoryEventView::Stage { stage } => format!(
                "stage       {}",
                text(&serde_json::to_value(stage).unwrap_or_default())
            ),
            HistoryEventView::Reassigned {
                from_rep_id,
                to_rep_id,
                why,
            } => format!(
                "reassigned  {from_rep_id} -> {} ({why})",
                to_rep_id.as_deref().unwrap_or("the queue")
            ),
            HistoryEventView::Closed { outcome } => format!(
                "closed      {}",
                text(&serde_json::to_value(outcome).unwrap_or_default())
            ),
            HistoryEventView::ShadowDisagreed {
                plugin,
                version,
                chosen_rep_id,
                shadow_rep_id,
                reason,
            } => format!(
                "shadow      {plugin}@{version} would have picked {} instead of {chosen_rep_id}: {reason}",
                shadow_rep_id.as_deref().unwrap_or("nobody")
            ),
        };
        let _ = writeln!(s, "  {}  {what}", h.at);
    }
    s
}

/// Renders a simulated decision for people.
pub fn render_simulation(sim: &SimulationView) -> String {
    let mut s = String::new();
    let verdict = match (&sim.duplicate_of, &sim.rep_id) {
        (Some(of), rep) => format!("duplicate of open lead {of} (rep {})", opt(rep)),
        (None, Some(rep)) => format!("would assign to {rep}"),
        (None, None) => "would queue: no rep has room".to_string(),
    };
    let _ = writeln!(s, "{verdict} in {}", sim.territory_id);
    let _ = writeln!(s, "  decided by  {}: {}", sim.decided_by, sim.reason);
    if let Some(f) = sim.fallback_detail.as_ref().or(sim.fallback.as_ref()) {
        let _ = writeln!(s, "  fallback    {f}");
    }
    let _ = writeln!(s, "  ranking     {}", sim.ranking.join(", "));
    let _ = writeln!(s, "  decide      {} µs", sim.timings.decide_us);
    let _ = writeln!(s, "candidates (rep  load/capacity)");
    for c in &sim.candidates {
        let _ = writeln!(s, "  {:<16} {}/{}", c.rep_id, c.load, c.capacity);
    }
    s
}

/// Renders the plugin list for people.
pub fn render_plugins(plugins: &[PluginView]) -> String {
    let mut s = String::new();
    if plugins.is_empty() {
        s.push_str("no plugins\n");
    }
    for p in plugins {
        let versions: Vec<String> = p.versions.iter().map(|v| v.version.to_string()).collect();
        let failures: Vec<String> = p.failures.iter().map(|(r, n)| format!("{r} {n}")).collect();
        let _ = writeln!(
            s,
            "{}  active v{}  versions [{}]  calls {}  failures [{}]  mean fuel {}  circuit {}",
            p.name,
            p.active_version,
            versions.join(", "),
            p.calls,
            failures.join(", "),
            p.mean_fuel,
            p.circuit.state,
        );
        if let Some(why) = &p.circuit.last_failure {
            let _ = writeln!(s, "  circuit opened by: {why}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(segment("rep-7_a.b"), "rep-7_a.b");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn errors_read_like_sentences() {
        let body =
            serde_json::json!({"error": {"code": "stage_order", "message": "expected demo"}});
        assert_eq!(
            describe_error(409, &body),
            "HTTP 409 stage_order: expected demo"
        );
        assert_eq!(describe_error(502, &Value::Null), "HTTP 502: null");
    }
}
