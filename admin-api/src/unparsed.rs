//! JSON bodies for the answers hyper gives on its own, to requests it cannot parse.
//!
//! A request whose head hyper cannot parse never reaches the router: hyper answers it
//! itself, with an empty body, and closes the connection. That is 400 for a malformed
//! request line or header, 431 for a head larger than its read buffer, 414 for a URI
//! too long. The contract promises a JSON error body on every 4xx, and hyper has no
//! hook for these answers, so [`JsonUnparsed`] wraps each connection, rewrites them
//! on their way out, and counts them (`leadroute_http_unparsed_requests_total`).
//!
//! They are recognised by their bytes: a write that is exactly one response head,
//! status 4xx, with `connection: close` and `content-length: 0` and no content type.
//! No answer of the router looks like that (every one of its errors has a JSON
//! body). The wrapper says it cannot write vectored, so hyper copies each response
//! into one buffer, and such a head arrives in one write. A test (`tests/router.rs`)
//! sends each kind of unparsable request: should a later hyper word its answers
//! otherwise, it fails instead of the bodies going missing.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::{ErrorBody, ErrorDetail};
use crate::metrics::HttpMetrics;

/// A connection whose unparsable-request answers get JSON bodies (see the module).
pub struct JsonUnparsed<S> {
    inner: S,
    /// Where each rewritten answer is counted, if anywhere.
    metrics: Option<HttpMetrics>,
    /// A rewritten answer not yet written out, and how much of it has been.
    pending: Vec<u8>,
    written: usize,
}

impl<S> JsonUnparsed<S> {
    /// Wraps `inner`, counting each rewritten answer in `metrics`
    /// (`leadroute_http_unparsed_requests_total{status}`).
    pub fn new(inner: S, metrics: Option<HttpMetrics>) -> Self {
        JsonUnparsed {
            inner,
            metrics,
            pending: Vec::new(),
            written: 0,
        }
    }
}

impl<S: AsyncWrite + Unpin> JsonUnparsed<S> {
    /// Writes out what is left of a rewritten answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonUnparsed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonUnparsed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if let Some((status, answer)) = with_json_body(buf) {
            if let Some(metrics) = &this.metrics {
                metrics.observe_unparsed(status);
            }
            // The original counts as written; its replacement goes out on the flush
            // hyper makes after every response.
            this.pending = answer;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// The statuses hyper answers unparsable requests with, each rewritten by
/// [`error_for`].
pub(crate) const STATUSES: [u16; 3] = [400, 414, 431];

/// The error code and message for a status hyper gives an unparsable request.
fn error_for(status: u16) -> Option<(&'static str, &'static str)> {
    Some(match status {
        400 => (
            "malformed_request",
            "the request line or a header is not valid HTTP/1.1",
        ),
        414 => ("uri_too_long", "the request's URI is too long"),
        431 => (
            "headers_too_large",
            "the request's head (its line and headers) is too large",
        ),
        _ => return None,
    })
}

/// The status and `bytes` with a JSON error body, if they are one of hyper's own
/// answers to an unparsable request (see the module); `None` for anything else.
fn with_json_body(bytes: &[u8]) -> Option<(u16, Vec<u8>)> {
    // Most writes are 2xx answers: out at the first bytes.
    if !bytes.starts_with(b"HTTP/1.1 4") {
        return None;
    }
    let head = std::str::from_utf8(bytes).ok()?.strip_suffix("\r\n\r\n")?;
    if head.contains("\r\n\r\n") {
        return None;
    }
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let headers: Vec<&str> = lines.collect();
    let has = |line: &str| headers.iter().any(|h| h.eq_ignore_ascii_case(line));
    let typed = headers
        .iter()
        .any(|h| h.to_ascii_lowercase().starts_with("content-type:"));
    if !has("connection: close") || !has("content-length: 0") || typed {
        return None;
    }
    let status = status_line.get(9..12)?.parse().ok()?;
    let (code, message) = error_for(status)?;
    let body = serde_json::to_string(&ErrorBody {
        error: ErrorDetail {
            code: code.into(),
            message: message.into(),
            field: None,
        },
    })
    .ok()?;
    let mut answer = format!("{status_line}\r\n");
    for header in headers
        .iter()
        .filter(|h| !h.eq_ignore_ascii_case("content-length: 0"))
    {
        answer.push_str(header);
        answer.push_str("\r\n");
    }
    answer.push_str("content-type: application/json\r\n");
    answer.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    Some((status, answer.into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CANNED: &str = "HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\n\
                          content-length: 0\r\ndate: Sat, 28 Nov 2026 02:56:14 GMT\r\n\r\n";

    #[test]
    fn every_status_counted_from_the_start_is_one_rewritten() {
        for status in STATUSES {
            assert!(error_for(status).is_some(), "{status}");
        }
    }

    #[test]
    fn hypers_own_answer_gets_a_json_body() {
        let (status, answer) = with_json_body(CANNED.as_bytes()).unwrap();
        assert_eq!(status, 431);
        let answer = String::from_utf8(answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nconnection: close"), "{head}");
        assert!(head.contains("\r\ndate: Sat, 28 Nov 2026"), "{head}");
        assert!(
            head.contains("\r\ncontent-type: application/json"),
            "{head}"
        );
        assert!(
            head.contains(&format!("\r\ncontent-length: {}", body.len())),
            "{head}"
        );
        assert!(!head.contains("content-length: 0"), "{head}");
        let parsed: ErrorBody = serde_json::from_str(body).unwrap();
        assert_eq!(parsed.error.code, "headers_too_large");
    }

    #[test]
    fn every_other_write_passes_untouched() {
        for other in [
            // A success, and the router's own error, which has a body.
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-type: application/json\r\n\
             content-length: 0\r\n\r\n",
            // Kept alive, or with a body: not hyper's answer to an unparsable request.
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n{}",
            // A head and the start of the next one: not exactly one head.
            "HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n\
             HTTP/1.1 400 Bad Request\r\n\r\n",
            // A 4xx status hyper never gives on its own.
            "HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            // Half a head.
            "HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\n",
        ] {
            assert_eq!(with_json_body(other.as_bytes()), None, "{other:?}");
        }
    }
}
