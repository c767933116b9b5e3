//! Webhooks: `PUT/GET/DELETE /admin/webhooks/{webhook_id}`, `GET /admin/webhooks`, and
//! the dead letters of a subscription with their re-drive.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use leadroute_engine::domain::{Webhook, WebhookId};
use leadroute_engine::engine::DEFAULT_DEAD_LETTER_PAGE;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::uncancelled;
use crate::dto::{DeadLetterView, RedriveView, WebhookBody, WebhookView};
use crate::error::{AppError, ErrorBody};
use crate::extract::{Json, Path, Query};
use crate::state::AppState;

/// Returns the webhook routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_webhooks))
        .routes(routes!(put_webhook, get_webhook, delete_webhook))
        .routes(routes!(list_dead_letters))
        .routes(routes!(redrive_dead_letters))
}

/// A webhook id from a path that must name an existing subscription.
fn existing(raw: &str) -> Result<WebhookId, AppError> {
    WebhookId::new(raw)
        .map_err(|_| AppError::not_found("webhook_not_found", format!("webhook {raw} not found")))
}

/// The subscriptions with their pending and dead-letter counts. Counting walks the
/// pending events and the letters' keys (no letter is decoded), which a long outage
/// makes millions of: on a blocking thread, not one of the runtime's few workers.
async fn views(state: &AppState, hooks: Vec<Webhook>) -> Result<Vec<WebhookView>, AppError> {
    let engine = state.engine.clone();
    tokio::task::spawn_blocking(move || {
        hooks
            .into_iter()
            .map(|webhook| {
                let cursor = engine.webhook_cursor(&webhook.id)?;
                let pending = engine.outbox_len_after(cursor);
                let dead = engine.dead_letter_count(&webhook.id)?;
                Ok(WebhookView::new(webhook, pending, dead))
            })
            .collect()
    })
    .await
    .map_err(AppError::internal)?
}

/// One subscription with its counts (see [`views`]).
async fn view(state: &AppState, webhook: Webhook) -> Result<WebhookView, AppError> {
    let mut one = views(state, vec![webhook]).await?;
    Ok(one.pop().expect("one view per subscription"))
}

/// Lists every subscription with its pending and dead-letter counts, by id.
#[utoipa::path(
    get, path = "/admin/webhooks", tag = "webhooks",
    responses(
        (status = 200, description = "Every subscription, by id.", body = Vec<WebhookView>),
        (status = 401, description = "Missing or unknown token.", body = ErrorBody),
        (status = 403, description = "Not the admin token.", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn list_webhooks(
    State(state): State<AppState>,
) -> Result<Json<Vec<WebhookView>>, AppError> {
    let hooks = state.engine.webhooks()?;
    Ok(Json(views(&state, hooks).await?))
}

/// Creates or replaces a subscription. A new one receives the events written after
/// it; a replaced one keeps its place in the outbox.
#[utoipa::path(
    put, path = "/admin/webhooks/{webhook_id}", tag = "webhooks",
    params(("webhook_id" = String, Path, description = "Client-chosen id, `[A-Za-z0-9_.-]{1,64}`.")),
    request_body = WebhookBody,
    responses(
        (status = 201, description = "Created.", body = WebhookView),
        (status = 200, description = "Replaced.", body = WebhookView),
        (status = 400, description = "Malformed JSON or wrong content type.", body = ErrorBody),
        (status = 401, description = "Missing or unknown token.", body = ErrorBody),
        (status = 403, description = "Not the admin token.", body = ErrorBody),
        (status = 413, description = "Body over the JSON limit (64 KiB by default).", body = ErrorBody),
        (status = 422, description = "`invalid_id`, `unknown_field`, `invalid_field` \
            (`url`, `events`, `secret`).", body = ErrorBody),
        (status = 503, description = "`overloaded` (64 admin writes already waiting), \
            `store_unavailable` or `shutting_down`; nothing changed. `Retry-After: 1`.", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn put_webhook(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    Json(body): Json<WebhookBody>,
) -> Result<(StatusCode, Json<WebhookView>), AppError> {
    let id = WebhookId::new(raw).map_err(|e| AppError::invalid(e.code, "webhook_id", e.message))?;
    // Schemes are case-insensitive: `HTTPS://` is https too.
    let https = body.url.trim_start().get(..8);
    if !cfg!(feature = "tls") && https.is_some_and(|s| s.eq_ignore_ascii_case("https://")) {
        return Err(AppError::invalid(
            "invalid_field",
            "url",
            "this build delivers over plain HTTP only; build with `--features tls` for https",
        ));
    }
    let engine = state.engine.clone();
    let (webhook, created) =
        uncancelled(async move { engine.put_webhook(id, body.into()).await }).await??;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view(&state, webhook).await?)))
}

/// Returns one subscription with its pending and dead-letter counts.
#[utoipa::path(
    get, path = "/admin/webhooks/{webhook_id}", tag = "webhooks",
    params(("webhook_id" = String, Path, description = "The subscription's id.")),
    responses(
        (status = 200, description = "The subscription.", body = WebhookView),
        (status = 401, description = "Missing or unknown token.", body = ErrorBody),
        (status = 403, description = "Not the admin token.", body = ErrorBody),
        (status = 404, description = "`webhook_not_found`.", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn get_webhook(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<WebhookView>, AppError> {
    let id = existing(&raw)?;
    let webhook = state.engine.webhook(&id)?;
    Ok(Json(view(&state, webhook).await?))
}

/// Deletes a subscription, its pending events and its dead letters.
#[utoipa::path(
    delete, path = "/admin/webhooks/{webhook_id}", tag = "webhooks",
    params(("webhook_id" = String, Path, description = "The subscription's id.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 401, description = "Missing or unknown token.", body = ErrorBody),
        (status = 403, description = "Not the admin token.", body = ErrorBody),
        (status = 404, description = "`webhook_not_found`.", body = ErrorBody),
        (status = 503, description = "`overloaded` (64 admin writes already waiting), \
            `store_unavailable` or `shutting_down`; nothing changed. `Retry-After: 1`.", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn delete_webhook(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<StatusCode, AppError> {
    let id = existing(&raw)?;
    let engine = state.engine.clone();
    uncancelled(async move { engine.delete_webhook(&id).await }).await??;
    Ok(StatusCode::NO_CONTENT)
}

/// Query of `GET /admin/webhooks/{webhook_id}/dead_letters`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeadLettersQuery {
    /// Most letters in the answer, 1–1000; default 100.
    pub limit: Option<u32>,
    /// Only letters after this cursor: copy it from the previous page's
    /// `Link: <…>; rel="next"`. Absent: from the oldest.
    pub after: Option<u64>,
}

/// Lists the events a subscription gave up on, oldest first, a page at a time. When
/// more follow, the answer has a `Link` header with `rel="next"`: the URL of the next
/// page. A page without it is the last.
#[utoipa::path(
    get, path = "/admin/webhooks/{webhook_id}/dead_letters", tag = "webhooks",
    params(("webhook_id" = String, Path, description = "The subscription's id."), DeadLettersQuery),
    responses(
        (status = 200, description = "A page of its dead letters, oldest first.",
            body = Vec<DeadLetterView>,
            headers(("Link" = String, description = "`</admin/webhooks/{webhook_id}/dead_letters?after=N&limit=L>; rel=\"next\"` \
                when more letters follow; absent on the last page."))),
        (status = 400, description = "`invalid_query`: `limit` or `after` is not an unsigned \
            whole number (`ten`, `-1`), or an unknown parameter.", body = ErrorBody),
        (status = 401, description = "Missing or unknown token.", body = ErrorBody),
        (status = 403, description = "Not the admin token.", body = ErrorBody),
        (status = 404, description = "`webhook_not_found`.", body = ErrorBody),
        (status = 422, description = "`invalid_field` (`limit` out of 1–1000).", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn list_dead_letters(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    Query(query): Query<DeadLettersQuery>,
) -> Result<(HeaderMap, Json<Vec<DeadLetterView>>), AppError> {
    let id = existing(&raw)?;
    let page = state
        .engine
        .dead_letter_page(&id, query.after, query.limit)?;
    let mut headers = HeaderMap::new();
    if let Some(next) = page.next {
        // The engine accepted the limit, so it is in range.
        let limit = query.limit.unwrap_or(DEFAULT_DEAD_LETTER_PAGE);
        // Webhook ids are `[A-Za-z0-9_.-]`, so the id needs no escaping in the URL.
        let link =
            format!("</admin/webhooks/{id}/dead_letters?after={next}&limit={limit}>; rel=\"next\"");
        headers.insert(
            header::LINK,
            HeaderValue::from_str(&link).map_err(AppError::internal)?,
        );
    }
    Ok((
        headers,
        Json(page.letters.into_iter().map(Into::into).collect()),
    ))
}

/// Delivers a subscription's dead letters again, each with a fresh round of
/// attempts; one that fails again stays a dead letter.
#[utoipa::path(
    post, path = "/admin/webhooks/{webhook_id}/dead_letters/redrive", tag = "webhooks",
    params(("webhook_id" = String, Path, description = "The subscription's id.")),
    responses(
        (status = 202, description = "Queued for delivery.", body = RedriveView),
        (status = 401, description = "Missing or unknown token.", body = ErrorBody),
        (status = 403, description = "Not the admin token.", body = ErrorBody),
        (status = 404, description = "`webhook_not_found` (also when it is deleted while its \
            letters are marked).", body = ErrorBody),
        (status = 503, description = "`store_unavailable`: the store cannot write; letters \
            marked before the error stay marked (marking again is harmless). \
            `Retry-After: 1`.", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn redrive_dead_letters(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<(StatusCode, Json<RedriveView>), AppError> {
    let id = existing(&raw)?;
    // Marks every letter, a page at a time: millions after a long outage, so on a
    // blocking thread.
    let engine = state.engine.clone();
    let redriven = tokio::task::spawn_blocking(move || engine.redrive_dead_letters(&id))
        .await
        .map_err(AppError::internal)??;
    Ok((StatusCode::ACCEPTED, Json(RedriveView { redriven })))
}
