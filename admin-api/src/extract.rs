//! Extractors whose rejections are [`AppError`]s, so bad input gets the same JSON
//! error body as everything else (axum's own extractors answer in plain text).
//!
//! - [`Json`]: `application/json` bodies, parsed with the path of the offending field.
//! - [`Wasm`]: `application/wasm` bodies (plugin uploads).
//! - [`Path`], [`Query`]: axum's, with JSON rejections.
//! - [`BodyLimit`]: the body limit of a route, so a 413 can say what it is.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::AppError;

/// The body limit in force on a route, in bytes; set next to `DefaultBodyLimit`.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimit(pub usize);

/// A JSON body of type `T`, in either direction. Rejections: 400 `wrong_content_type` or `malformed_json`,
/// 413 `body_too_large`, 422 `unknown_field`, `missing_field` or `invalid_field`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        if !is_json(req.headers().get(header::CONTENT_TYPE)) {
            return Err(AppError::bad_request(
                "wrong_content_type",
                "expected a JSON body with Content-Type: application/json",
            ));
        }
        let bytes = read_body(req, state).await?;
        parse(&bytes).map(Json)
    }
}

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// A raw WebAssembly module (`Content-Type: application/wasm`), for plugin uploads.
/// Rejections: 400 `wrong_content_type` or `empty_body`, 413 `body_too_large`.
#[derive(Debug, Clone)]
pub struct Wasm(pub Bytes);

impl<S> FromRequest<S> for Wasm
where
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        let is_wasm = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/wasm"));
        if !is_wasm {
            return Err(AppError::bad_request(
                "wrong_content_type",
                "expected a WebAssembly module with Content-Type: application/wasm",
            ));
        }
        let bytes = read_body(req, state).await?;
        if bytes.is_empty() {
            return Err(AppError::bad_request("empty_body", "the module is empty"));
        }
        Ok(Wasm(bytes))
    }
}

/// Reads the whole body, answering 413 `body_too_large` past the route's limit.
///
/// A declared `Content-Length` over the limit is refused before a byte of the body is
/// read, so a client that sent `Expect: 100-continue` never uploads it.
pub async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, AppError> {
    let limit = req.extensions().get::<BodyLimit>().copied();
    let too_large = || {
        let message = match limit {
            Some(BodyLimit(n)) => format!("the request body is larger than {n} bytes"),
            None => "the request body is too large".to_string(),
        };
        AppError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", message)
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let (Some(BodyLimit(n)), Some(len)) = (limit, declared)
        && len > n as u64
    {
        return Err(too_large());
    }
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            AppError::bad_request("unreadable_body", rejection.body_text())
        }
    })
}

fn is_json(value: Option<&header::HeaderValue>) -> bool {
    let Some(mime) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = mime.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        || (essence.len() > 17
            && essence[..12].eq_ignore_ascii_case("application/")
            && essence.to_ascii_lowercase().ends_with("+json"))
}

/// Parses JSON text into `T`; errors name the offending field.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    // serde also accepts a struct written as an array of its fields in order, so
    // `["crm-1"]` would pass as a lead; every body of the API is an object.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(AppError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "the body must be a JSON object, not an array",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| json_error(e, ""))?;
    // Trailing garbage after the document is malformed JSON too.
    de.end().map_err(|e| {
        AppError::bad_request("malformed_json", format!("the body is not valid JSON: {e}"))
    })?;
    Ok(value)
}

/// Converts an already-parsed JSON value into `T`; errors name the field under
/// `prefix` (e.g. `leads[3]`).
pub fn from_value<T: DeserializeOwned>(
    value: serde_json::Value,
    prefix: &str,
) -> Result<T, AppError> {
    serde_path_to_error::deserialize(value).map_err(|e| json_error(e, prefix))
}

fn json_error(e: serde_path_to_error::Error<serde_json::Error>, prefix: &str) -> AppError {
    use serde_json::error::Category;
    // serde_path_to_error writes the root as ".".
    let path = Some(e.path().to_string())
        .filter(|p| p != ".")
        .unwrap_or_default();
    let inner = e.into_inner();
    match inner.classify() {
        Category::Syntax | Category::Eof | Category::Io => AppError::bad_request(
            "malformed_json",
            format!("the body is not valid JSON: {inner}"),
        ),
        Category::Data => {
            let message = strip_position(&inner.to_string());
            // serde_path_to_error's path already ends at an unknown field, but stops at
            // the struct that lacks a missing one.
            let (code, field) = if message.starts_with("unknown field `") {
                ("unknown_field", join(prefix, &path))
            } else if let Some(name) = quoted_after(&message, "missing field `") {
                ("missing_field", join(prefix, &join(&path, &name)))
            } else {
                ("invalid_field", join(prefix, &path))
            };
            let error = AppError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message);
            // An error about the whole body (`null`, an array) names no field.
            if field.is_empty() {
                error
            } else {
                error.with_field(field)
            }
        }
    }
}

/// Joins a path prefix and a field: `leads[3]` + `phone` → `leads[3].phone`.
fn join(prefix: &str, rest: &str) -> String {
    match (prefix.is_empty(), rest.is_empty()) {
        (true, _) => rest.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) if rest.starts_with('[') => format!("{prefix}{rest}"),
        (false, false) => format!("{prefix}.{rest}"),
    }
}

/// The text between `start` and the next backtick.
fn quoted_after(message: &str, start: &str) -> Option<String> {
    let rest = &message[message.find(start)? + start.len()..];
    Some(rest[..rest.find('`')?].to_string())
}

/// Drops serde_json's " at line 1 column 42" suffix: positions mean nothing to
/// someone who sent a one-line body.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Path parameters; rejections are JSON (400 `invalid_path`).
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Path(v))
            .map_err(|r| AppError::new(r.status(), "invalid_path", r.body_text()))
    }
}

/// The query string; rejections are JSON (400 `invalid_query`).
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Query(v))
            .map_err(|r| AppError::bad_request("invalid_query", r.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        #[serde(default)]
        inner: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u32,
    }

    #[test]
    fn syntax_errors_are_400_malformed_json() {
        for text in ["{", "{\"name\": }", "nope", "{\"name\":\"a\"} trailing"] {
            let e = parse::<Body>(text.as_bytes()).unwrap_err();
            assert_eq!(
                (e.status.as_u16(), e.code.as_ref()),
                (400, "malformed_json"),
                "{text}"
            );
        }
    }

    #[test]
    fn data_errors_are_422_with_the_field() {
        let e = parse::<Body>(br#"{"name":"a","colour":1}"#).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code.as_ref()), (422, "unknown_field"));
        assert_eq!(e.field.as_deref(), Some("colour"));

        let e = parse::<Body>(br#"{"name":"a","inner":{"n":"x"}}"#).unwrap_err();
        assert_eq!(e.code, "invalid_field");
        assert_eq!(e.field.as_deref(), Some("inner.n"));
        assert!(!e.message.contains("line 1"), "{}", e.message);

        let e = parse::<Body>(b"null").unwrap_err();
        assert_eq!((e.status.as_u16(), e.field), (422, None));

        let e = parse::<Body>(br#"{"inner":{"n":1}}"#).unwrap_err();
        assert_eq!(e.code, "missing_field");
        assert_eq!(e.field.as_deref(), Some("name"));

        let e = from_value::<Body>(
            serde_json::json!({"name": "a", "inner": {"m": 1}}),
            "leads[2]",
        )
        .unwrap_err();
        assert_eq!(e.code, "unknown_field");
        assert_eq!(e.field.as_deref(), Some("leads[2].inner.m"));
    }

    #[test]
    fn json_content_types_are_recognised() {
        let ok = |s: &'static str| is_json(Some(&header::HeaderValue::from_static(s)));
        assert!(ok("application/json"));
        assert!(ok("Application/JSON; charset=utf-8"));
        assert!(ok("application/vnd.leadroute+json"));
        assert!(!ok("application/x-www-form-urlencoded"));
        assert!(!ok("text/plain"));
        assert!(!is_json(None));
    }
}
