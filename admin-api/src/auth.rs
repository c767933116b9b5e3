//! Bearer-token auth: an intake token opens `/v1/*`, an admin token opens `/admin/*`
//! and `/v1/*`.
//!
//! Missing or unknown token → 401; the intake token on an admin route → 403. With no
//! token configured the server is open; [`crate::config`] allows that only on a
//! loopback address. Tokens are compared in constant time, always against both
//! configured tokens, so timing tells nothing about which one nearly matched.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use crate::error::AppError;
use crate::state::AppState;

/// A secret token; its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps a token that [`crate::config`] has validated.
    pub fn new(secret: impl Into<String>) -> Self {
        Token(secret.into())
    }

    /// Compares with `presented` in time independent of where they differ.
    /// (Only the length can leak, which says little about a 16+ character secret.)
    fn matches(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// What a request's token allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// `/v1/*`: intake and leads.
    Intake,
    /// Everything.
    Admin,
}

/// The configured tokens.
#[derive(Clone, Debug, Default)]
pub struct Auth {
    /// Opens every route.
    pub admin: Option<Token>,
    /// Opens `/v1/*`.
    pub intake: Option<Token>,
}

impl Auth {
    /// Returns whether no token is configured, so every route is open.
    pub fn is_open(&self) -> bool {
        self.admin.is_none() && self.intake.is_none()
    }

    /// Decides whether `headers` carry a token good for `needed`.
    pub fn check(&self, headers: &HeaderMap, needed: Role) -> Result<(), AppError> {
        if self.is_open() {
            return Ok(());
        }
        let presented = bearer(headers).ok_or_else(|| {
            AppError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing bearer token: send Authorization: Bearer <token>",
            )
        })?;
        // Both comparisons always run: no early exit to time.
        let admin = self.admin.as_ref().is_some_and(|t| t.matches(presented));
        let intake = self.intake.as_ref().is_some_and(|t| t.matches(presented));
        let role = match (admin, intake) {
            (true, _) => Role::Admin,
            (false, true) => Role::Intake,
            (false, false) => {
                return Err(AppError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "unknown bearer token",
                ));
            }
        };
        if role >= needed {
            Ok(())
        } else {
            Err(AppError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this route needs the admin token; the intake token opens /v1/* only",
            ))
        }
    }
}

/// The role the route group at `path` needs: `/admin/*` admin, `/v1/*` intake, the
/// operational routes none. Requests no route matched are checked against it before
/// they learn so, so the set of admin routes cannot be probed without a token.
pub fn needed_for_path(path: &str) -> Option<Role> {
    let under = |prefix: &str| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    if under("/admin") {
        Some(Role::Admin)
    } else if under("/v1") {
        Some(Role::Intake)
    } else {
        None
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = token.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Lets a request to `/v1/*` through with the intake or the admin token.
pub async fn require_intake(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, AppError> {
    state.auth.check(req.headers(), Role::Intake)?;
    Ok(next.run(req).await)
}

/// Lets a request to `/admin/*` through with the admin token only.
pub async fn require_admin(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, AppError> {
    state.auth.check(req.headers(), Role::Admin)?;
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const ADMIN: &str = "admin-token-0123456789";
    const INTAKE: &str = "intake-token-0123456789";

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        h
    }

    fn status(auth: &Auth, header: Option<&str>, needed: Role) -> u16 {
        match auth.check(&headers(header), needed) {
            Ok(()) => 200,
            Err(e) => e.status.as_u16(),
        }
    }

    #[test]
    fn the_token_matrix_holds() {
        let auth = Auth {
            admin: Some(Token::new(ADMIN)),
            intake: Some(Token::new(INTAKE)),
        };
        let admin = format!("Bearer {ADMIN}");
        let intake = format!("bearer {INTAKE}");
        assert_eq!(status(&auth, None, Role::Intake), 401);
        assert_eq!(status(&auth, None, Role::Admin), 401);
        assert_eq!(status(&auth, Some("Bearer nope"), Role::Intake), 401);
        assert_eq!(status(&auth, Some(ADMIN), Role::Admin), 401, "no scheme");
        assert_eq!(status(&auth, Some("Basic abc"), Role::Admin), 401);
        assert_eq!(status(&auth, Some(&intake), Role::Intake), 200);
        assert_eq!(status(&auth, Some(&intake), Role::Admin), 403);
        assert_eq!(status(&auth, Some(&admin), Role::Intake), 200);
        assert_eq!(status(&auth, Some(&admin), Role::Admin), 200);
        let prefix = format!("Bearer {}", &ADMIN[..ADMIN.len() - 1]);
        assert_eq!(status(&auth, Some(&prefix), Role::Admin), 401);
    }

    #[test]
    fn paths_need_their_group_role() {
        assert_eq!(needed_for_path("/admin"), Some(Role::Admin));
        assert_eq!(needed_for_path("/admin/nope"), Some(Role::Admin));
        assert_eq!(needed_for_path("/v1/leads/x/y"), Some(Role::Intake));
        assert_eq!(needed_for_path("/v1"), Some(Role::Intake));
        assert_eq!(needed_for_path("/administrator"), None);
        assert_eq!(needed_for_path("/v10/leads"), None);
        assert_eq!(needed_for_path("/metrics"), None);
        assert_eq!(needed_for_path("/"), None);
    }

    #[test]
    fn with_no_tokens_everything_is_open() {
        let auth = Auth::default();
        assert!(auth.is_open());
        assert_eq!(status(&auth, None, Role::Admin), 200);
    }

    #[test]
    fn tokens_never_print() {
        assert!(!format!("{:?}", Token::new(ADMIN)).contains(ADMIN));
    }
}
