//! The server's own account of a row, from its `/metrics` before and after.
//!
//! The generator's latency is the client's: it holds the server's time and every wait
//! for a CPU on a machine the generator shares. The server times its own stages in
//! Prometheus histograms; the difference of two scrapes gives each stage's mean over
//! the row, so a report can say how much of a client's latency the engine spent, and
//! where (waiting for the group commit, or deciding).

use std::collections::HashMap;

/// One scrape: every sample of the text format, by its name and labels as written.
pub struct Scrape(HashMap<String, f64>);

impl Scrape {
    /// Reads Prometheus text format; comments and unreadable lines are skipped.
    pub fn parse(text: &str) -> Scrape {
        Scrape(
            text.lines()
                .filter(|line| !line.starts_with('#'))
                .filter_map(|line| {
                    let (key, value) = line.rsplit_once(' ')?;
                    Some((key.to_string(), value.parse().ok()?))
                })
                .collect(),
        )
    }

    /// The sum of `name`'s samples whose labels include every one of `labels`.
    fn total(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|(key, _)| {
                let (base, rest) = key.split_once('{').unwrap_or((key, ""));
                base == name
                    && labels
                        .iter()
                        .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
            })
            .map(|(_, value)| value)
            .sum()
    }

    /// A histogram's mean from `before` to `self`, and how many it observed; `None`
    /// when it observed nothing in between.
    pub fn mean_since(
        &self,
        before: &Scrape,
        histogram: &str,
        labels: &[(&str, &str)],
    ) -> Option<(f64, f64)> {
        let delta = |suffix: &str| {
            let name = format!("{histogram}_{suffix}");
            self.total(&name, labels) - before.total(&name, labels)
        };
        let count = delta("count");
        (count > 0.0).then(|| (delta("sum") / count, count))
    }
}

/// One line: the server's means from `before` to `after` for single-lead intake, in
/// ms (group sizes in changes).
pub fn report(before: &Scrape, after: &Scrape) -> String {
    let ms = |histogram: &str, labels: &[(&str, &str)]| {
        after
            .mean_since(before, histogram, labels)
            .map_or("–".to_string(), |(mean, _)| {
                format!("{:.2}", mean * 1000.0)
            })
    };
    let stages: Vec<String> = ["dedupe", "decide", "reserve", "commit"]
        .iter()
        .map(|stage| {
            format!(
                "{stage} {}",
                ms(
                    "leadroute_route_stage_duration_seconds",
                    &[("stage", stage)]
                )
            )
        })
        .collect();
    let group = after
        .mean_since(before, "leadroute_store_commit_group_size", &[])
        .map_or("–".to_string(), |(mean, _)| format!("{mean:.1}"));
    format!(
        "HTTP `POST /v1/leads` {}; intake to durable decision {} ({}); a change waited {} \
         for its group to start; a group commit {} for {group} changes; an answer waited \
         {} to be read",
        ms(
            "leadroute_http_request_duration_seconds",
            &[("method", "POST"), ("route", "/v1/leads")]
        ),
        ms("leadroute_route_duration_seconds", &[]),
        stages.join(", "),
        ms("leadroute_store_commit_wait_seconds", &[]),
        ms("leadroute_store_commit_seconds", &[]),
        ms("leadroute_store_answer_wait_seconds", &[]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = r#"# HELP leadroute_store_commit_seconds Apply and flush of one commit group.
# TYPE leadroute_store_commit_seconds histogram
leadroute_store_commit_seconds_bucket{le="0.001"} 1
leadroute_store_commit_seconds_sum 0.002
leadroute_store_commit_seconds_count 2
leadroute_route_stage_duration_seconds_sum{stage="commit"} 0.01
leadroute_route_stage_duration_seconds_count{stage="commit"} 10
leadroute_route_stage_duration_seconds_sum{stage="decide"} 0.0001
leadroute_route_stage_duration_seconds_count{stage="decide"} 10
leadroute_http_request_duration_seconds_sum{method="POST",route="/v1/leads"} 0.03
leadroute_http_request_duration_seconds_count{method="POST",route="/v1/leads"} 10
leadroute_http_request_duration_seconds_sum{method="POST",route="/v1/leads/batch"} 5
leadroute_http_request_duration_seconds_count{method="POST",route="/v1/leads/batch"} 1
"#;

    const AFTER: &str = r#"leadroute_store_commit_seconds_sum 0.012
leadroute_store_commit_seconds_count 7
leadroute_store_commit_group_size_sum 40
leadroute_store_commit_group_size_count 5
leadroute_store_commit_wait_seconds_sum 0.04
leadroute_store_commit_wait_seconds_count 40
leadroute_store_answer_wait_seconds_sum 0.02
leadroute_store_answer_wait_seconds_count 40
leadroute_route_stage_duration_seconds_sum{stage="commit"} 0.05
leadroute_route_stage_duration_seconds_count{stage="commit"} 30
leadroute_route_stage_duration_seconds_sum{stage="decide"} 0.0001
leadroute_route_stage_duration_seconds_count{stage="decide"} 10
leadroute_http_request_duration_seconds_sum{method="POST",route="/v1/leads"} 0.09
leadroute_http_request_duration_seconds_count{method="POST",route="/v1/leads"} 30
leadroute_http_request_duration_seconds_sum{method="POST",route="/v1/leads/batch"} 9
leadroute_http_request_duration_seconds_count{method="POST",route="/v1/leads/batch"} 2
"#;

    #[test]
    fn means_are_the_difference_of_two_scrapes() {
        let (before, after) = (Scrape::parse(BEFORE), Scrape::parse(AFTER));
        let (mean, count) = after
            .mean_since(&before, "leadroute_store_commit_seconds", &[])
            .unwrap();
        assert_eq!(count, 5.0);
        assert!((mean - 0.002).abs() < 1e-12, "{mean}");
        // Labels select: the batch route is not the single-lead one.
        let (http, _) = after
            .mean_since(
                &before,
                "leadroute_http_request_duration_seconds",
                &[("method", "POST"), ("route", "/v1/leads")],
            )
            .unwrap();
        assert!((http - 0.003).abs() < 1e-12, "{http}");
        // A histogram that observed nothing in between has no mean.
        assert_eq!(
            after.mean_since(
                &before,
                "leadroute_route_stage_duration_seconds",
                &[("stage", "decide")]
            ),
            None
        );
        assert_eq!(
            report(&before, &after),
            "HTTP `POST /v1/leads` 3.00; intake to durable decision – (dedupe –, decide –, \
             reserve –, commit 2.00); a change waited 1.00 for its group to start; a group \
             commit 2.00 for 8.0 changes; an answer waited 0.50 to be read"
        );
    }
}
