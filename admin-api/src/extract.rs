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
/// Rejections: 400 `wrong_content_type`, 413 `body_too_large`, and 422
/// `plugin_invalid` for an empty body: API.md answers an invalid module 422, and no
/// bytes are no module.
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
            return Err(AppError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "plugin_invalid",
                "the module is empty: the body holds no bytes",
            ));
        }
        Ok(Wasm(bytes))
    }
}

/// Longest a request's body may take to arrive, whole: a client trickling a large body
/// must not hold its connection and task for ever. 8 MiB (the batch limit) in this
/// time is about 2 Mbit/s.
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads the whole body, answering 413 `body_too_large` past the route's limit and 408
/// `body_timeout` when it takes longer than [`BODY_READ_TIMEOUT`].
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
    let Ok(read) = tokio::time::timeout(BODY_READ_TIMEOUT, Bytes::from_request(req, state)).await
    else {
        return Err(AppError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the request body did not arrive within {} s",
                BODY_READ_TIMEOUT.as_secs()
            ),
        ));
    };
    read.map_err(|rejection| {
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
    parse_at(bytes, "")
}

/// Parses JSON text into `T`, one part of a larger body; errors name the field under
/// `prefix` (e.g. `leads[3]`).
pub fn parse_at<T: DeserializeOwned>(text: impl AsRef<[u8]>, prefix: &str) -> Result<T, AppError> {
    let bytes = text.as_ref();
    // serde also accepts a struct written as an array of its fields in order, so
    // `["crm-1"]` would pass as a lead; every body of the API is an object.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        let error = AppError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "expected a JSON object, not an array",
        );
        return Err(if prefix.is_empty() {
            error
        } else {
            error.with_field(prefix)
        });
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| json_error(e, prefix))?;
    // Trailing garbage after the document is malformed JSON too.
    de.end().map_err(|e| {
        AppError::bad_request("malformed_json", format!("the body is not valid JSON: {e}"))
    })?;
    Ok(value)
}

/// `deserialize_with` for a field that holds a struct: only a JSON object will do.
/// serde's derive also accepts a struct written as an array of its fields in order
/// (`"lead": ["crm-1"]`), a form the API does not have.
pub fn object<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    struct Object<T>(std::marker::PhantomData<T>);
    impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Object<T> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }
    deserializer.deserialize_map(Object(std::marker::PhantomData))
}

/// [`object`] for an optional struct: a JSON object, or `null`.
pub fn optional_object<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    struct Optional<T>(std::marker::PhantomData<T>);
    impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Optional<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object or null")
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
            object(d).map(Some)
        }
    }
    deserializer.deserialize_option(Optional(std::marker::PhantomData))
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
        #[serde(default, deserialize_with = "optional_object")]
        inner: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Wrapper {
        #[serde(deserialize_with = "object")]
        inner: Inner,
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

        let e = parse_at::<Body>(r#"{"name": "a", "inner": {"m": 1}}"#, "leads[2]").unwrap_err();
        assert_eq!(e.code, "unknown_field");
        assert_eq!(e.field.as_deref(), Some("leads[2].inner.m"));

        let e = parse_at::<Body>(r#" ["a"]"#, "leads[2]").unwrap_err();
        assert_eq!(e.code, "invalid_field");
        assert_eq!(e.field.as_deref(), Some("leads[2]"));
    }

    #[test]
    fn structs_inside_a_body_must_be_objects() {
        // serde's derive would take `[1]` as `Inner { n: 1 }`.
        let e = parse::<Wrapper>(br#"{"inner":[1]}"#).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code.as_ref()), (422, "invalid_field"));
        assert_eq!(e.field.as_deref(), Some("inner"));
        assert!(
            e.message.contains("expected a JSON object"),
            "{}",
            e.message
        );
        let e = parse::<Body>(br#"{"name":"a","inner":[1]}"#).unwrap_err();
        assert_eq!(e.code, "invalid_field");
        assert_eq!(e.field.as_deref(), Some("inner"));

        assert_eq!(
            parse::<Wrapper>(br#"{"inner":{"n":1}}"#).unwrap().inner.n,
            1
        );
        assert_eq!(
            parse::<Body>(br#"{"name":"a","inner":{"n":2}}"#)
                .unwrap()
                .inner
                .unwrap()
                .n,
            2
        );
        assert!(
            parse::<Body>(br#"{"name":"a","inner":null}"#)
                .unwrap()
                .inner
                .is_none()
        );
        assert!(parse::<Body>(br#"{"name":"a"}"#).unwrap().inner.is_none());
        // Errors inside still name their field, and unknown fields are still refused.
        let e = parse::<Wrapper>(br#"{"inner":{"n":1,"m":2}}"#).unwrap_err();
        assert_eq!(e.code, "unknown_field");
        assert_eq!(e.field.as_deref(), Some("inner.m"));
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
