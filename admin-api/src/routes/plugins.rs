//! Routing plugins: `PUT/GET/DELETE /admin/plugins/{name}`, `GET /admin/plugins`,
//! `POST /admin/plugins/{name}/activate`.
//!
//! Uploads are raw `.wasm` bodies with their own (larger) body limit; the engine
//! validates a module completely (compile, imports, exports, ABI version, a smoke
//! run) before it stores anything.

use axum::extract::State;
use axum::http::StatusCode;
use leadroute_engine::EngineError;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

use super::{body_limit, uncancelled};
use crate::dto::{ActivateBody, PluginVersionView, PluginView};
use crate::error::{AppError, ErrorBody};
use crate::extract::{Json, Path, Wasm};
use crate::state::AppState;

/// Returns the plugin routes; uploads get the plugin body limit.
pub fn routes(state: &AppState) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_plugins))
        .routes(
            routes!(put_plugin, get_plugin, delete_plugin)
                .layer(body_limit(state.limits.plugin_body_bytes)),
        )
        .routes(routes!(activate_plugin))
}

/// Lists every plugin with its versions, active version, calls, failures by reason
/// and circuit state.
#[utoipa::path(
    get, path = "/admin/plugins", tag = "plugins",
    responses(
        (status = 200, description = "Every plugin, by name.", body = Vec<PluginView>),
        (status = 401, description = "Missing or unknown token.", body = ErrorBody),
        (status = 403, description = "Not the admin token.", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn list_plugins(
    State(state): State<AppState>,
) -> Result<Json<Vec<PluginView>>, AppError> {
    let plugins = state.engine.plugins()?;
    Ok(Json(plugins.into_iter().map(Into::into).collect()))
}

/// Uploads a module as a new version of the plugin, which becomes the active one.
/// By default at most two modules compile at once (a compile past its time limit runs on
/// in the background); an upload finding every slot busy is refused with 503
/// `compile_busy`.
#[utoipa::path(
    put, path = "/admin/plugins/{name}", tag = "plugins",
    params(("name" = String, Path, description = "The plugin's name, a tag: `[a-z0-9_.-]{1,64}`.")),
    request_body(content = Vec<u8>, content_type = "application/wasm",
        description = "The compiled module (8 MiB body limit by default)."),
    responses(
        (status = 201, description = "Stored and active.", body = PluginVersionView),
        (status = 400, description = "`wrong_content_type`.", body = ErrorBody),
        (status = 401, description = "Missing or unknown token.", body = ErrorBody),
        (status = 403, description = "Not the admin token.", body = ErrorBody),
        (status = 413, description = "Body over the plugin limit.", body = ErrorBody),
        (status = 422, description = "`plugin_invalid`: the message says which check failed \
            (an empty body, module size, compilation, imports, exports, ABI version, smoke \
            run, or the `plugin_config` of a territory following the active version); or a \
            bad name (`invalid_id`).", body = ErrorBody),
        (status = 503, description = "`compile_busy`: every compile slot is held by \
            compiles still running, including ones of uploads that timed out (a compile \
            cannot be interrupted); nothing was stored, retry once they finish. Also \
            `overloaded`, `store_unavailable`, `shutting_down`. `Retry-After: 1`.", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn put_plugin(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Wasm(module): Wasm,
) -> Result<(StatusCode, Json<PluginVersionView>), AppError> {
    let engine = state.engine.clone();
    let stored = uncancelled(async move { engine.put_plugin(&name, module.to_vec()).await })
        .await?
        .map_err(|e| match e {
            // The name is the path's: a bad one is a bad id, as in every other `PUT`.
            EngineError::Invalid(v) if v.field == "name" => {
                AppError::invalid("invalid_id", v.field, v.message)
            }
            e => e.into(),
        })?;
    Ok((StatusCode::CREATED, Json(stored.into())))
}

/// Returns one plugin with its versions and health.
#[utoipa::path(
    get, path = "/admin/plugins/{name}", tag = "plugins",
    params(("name" = String, Path, description = "The plugin's name.")),
    responses(
        (status = 200, description = "The plugin.", body = PluginView),
        (status = 401, description = "Missing or unknown token.", body = ErrorBody),
        (status = 403, description = "Not the admin token.", body = ErrorBody),
        (status = 404, description = "`plugin_not_found`.", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn get_plugin(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<PluginView>, AppError> {
    Ok(Json(state.engine.plugin(&name)?.into()))
}

/// Deletes a plugin with all its versions; refused while a territory uses it.
#[utoipa::path(
    delete, path = "/admin/plugins/{name}", tag = "plugins",
    params(("name" = String, Path, description = "The plugin's name.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 401, description = "Missing or unknown token.", body = ErrorBody),
        (status = 403, description = "Not the admin token.", body = ErrorBody),
        (status = 404, description = "`plugin_not_found`.", body = ErrorBody),
        (status = 409, description = "`plugin_in_use`: the message names the territories.", body = ErrorBody),
        (status = 503, description = "`overloaded` (64 admin writes already waiting), \
            `store_unavailable` or `shutting_down`; nothing changed. `Retry-After: 1`.", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn delete_plugin(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, AppError> {
    let engine = state.engine.clone();
    uncancelled(async move { engine.delete_plugin(&name).await }).await??;
    Ok(StatusCode::NO_CONTENT)
}

/// Makes a stored version the active one (rollback or roll forward) and closes the
/// plugin's circuit. Decisions in flight finish on the version they started with.
#[utoipa::path(
    post, path = "/admin/plugins/{name}/activate", tag = "plugins",
    params(("name" = String, Path, description = "The plugin's name.")),
    request_body = ActivateBody,
    responses(
        (status = 200, description = "Activated; the plugin as it is now.", body = PluginView),
        (status = 400, description = "Malformed JSON or wrong content type.", body = ErrorBody),
        (status = 401, description = "Missing or unknown token.", body = ErrorBody),
        (status = 403, description = "Not the admin token.", body = ErrorBody),
        (status = 413, description = "Body over the JSON limit (64 KiB by default).", body = ErrorBody),
        (status = 404, description = "`plugin_not_found`: no such plugin.", body = ErrorBody),
        (status = 422, description = "`unknown_version`: the plugin has no such version; \
            `plugin_invalid`: the version refuses the `plugin_config` of a territory that \
            follows the active version (the message names them).", body = ErrorBody),
        (status = 503, description = "`overloaded` (64 admin writes already waiting), \
            `store_unavailable` or `shutting_down`; nothing changed. `Retry-After: 1`.", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn activate_plugin(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Json(body): Json<ActivateBody>,
) -> Result<Json<PluginView>, AppError> {
    let engine = state.engine.clone();
    let info = uncancelled(async move { engine.activate_plugin(&name, body.version).await })
        .await?
        .map_err(|e| match e {
            // The plugin (in the path) exists; the version (in the body) does not.
            EngineError::PluginNotFound {
                name,
                version: Some(v),
            } => AppError::invalid(
                "unknown_version",
                "version",
                format!("plugin {name} has no version {v}"),
            ),
            e => e.into(),
        })?;
    Ok(Json(info.into()))
}
