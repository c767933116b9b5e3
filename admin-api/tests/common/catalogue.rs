//! The error catalogue of `admin-api/README.md` ("## Errors"), for tests.
//!
//! Every test that reads an answer passes its error codes through
//! [`assert_documented`], so a code the server sends that the table does not list (or
//! lists with another status) fails whichever test first sees it.

use std::sync::OnceLock;

/// Every (status, code) row of the README's error table.
pub fn documented_codes() -> &'static [(u16, String)] {
    static CODES: OnceLock<Vec<(u16, String)>> = OnceLock::new();
    CODES.get_or_init(|| {
        let readme = include_str!("../../README.md");
        let table = readme
            .split_once("\n## Errors\n")
            .and_then(|(_, rest)| rest.split("\n## ").next())
            .expect("the README has an Errors section");
        table
            .lines()
            .filter_map(|line| {
                let mut cells = line.trim_matches('|').split(" | ");
                let status: u16 = cells.next()?.trim().parse().ok()?;
                let codes = cells.next()?;
                Some(
                    codes
                        .split('`')
                        .skip(1)
                        .step_by(2)
                        .map(move |code| (status, code.to_string()))
                        .collect::<Vec<_>>(),
                )
            })
            .flatten()
            .collect()
    })
}

/// Fails unless every error in an answer is in the catalogue: a rejection's own
/// `{"error": {"code"}}` with its status, and each lead's error inside a batch's `200`
/// with whatever status the table gives its code. Bodies that are not JSON (metrics,
/// empty answers) pass.
pub fn assert_documented(status: u16, body: &[u8]) {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    let documented = documented_codes();
    if let Some(code) = body["error"]["code"].as_str() {
        assert!(
            documented.contains(&(status, code.to_string())),
            "error `{code}` with status {status} is not in admin-api/README.md's error table"
        );
    }
    for result in body["results"].as_array().into_iter().flatten() {
        if let Some(code) = result["error"]["code"].as_str() {
            assert!(
                documented.iter().any(|(_, c)| c == code),
                "a batch lead's error `{code}` is not in admin-api/README.md's error table"
            );
        }
    }
}
