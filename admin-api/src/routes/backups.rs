//! Backups: `POST /admin/backups`.

use axum::extract::State;
use axum::http::StatusCode;
use leadroute_engine::engine::prune_backups;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::dto::BackupView;
use crate::error::{AppError, ErrorBody};
use crate::extract::Json;
use crate::state::AppState;

/// Returns the backup route.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(backup))
}

/// Writes a backup of the whole store to a file in the backup directory
/// (`backup_dir`, by default `backups` in the data directory) while the server
/// serves. The backup is one instant of the store: every change answered before the
/// request is in it, none sent after the answer. Commits go on while the store is
/// read; the committer stops only for the two handovers of what was written meanwhile
/// (`paused_ms`). The file is synced and given its final name, so a file of that name
/// is always complete. With `backup_keep` set, the oldest backup files past that many
/// are then removed (`removed`); a removal that fails is logged, and the backup still
/// stands. Restore it with `leadroute restore FILE --data-dir DIR` on a stopped
/// server. No body.
#[utoipa::path(
    post, path = "/admin/backups", tag = "operations",
    responses(
        (status = 201, description = "The backup is durable.", body = BackupView),
        (status = 401, description = "Missing or unknown token.", body = ErrorBody),
        (status = 403, description = "Not the admin token.", body = ErrorBody),
        (status = 409, description = "`backup_in_progress`: another backup is being \
            written; retry once it has answered.", body = ErrorBody),
        (status = 500, description = "`backup_failed`: the file could not be written \
            (the message names the path and the error), or more was written while the \
            store was read than a backup keeps in memory; nothing of it is kept.", body = ErrorBody),
        (status = 503, description = "`store_unavailable` or `shutting_down`.", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn backup(
    State(state): State<AppState>,
) -> Result<(StatusCode, Json<BackupView>), AppError> {
    let backup = state.engine.backup(&state.backup_dir).await?;
    let (dir, keep, written) = (
        state.backup_dir.clone(),
        state.backup_keep,
        backup.path.clone(),
    );
    let mut view = BackupView::from(backup);
    match tokio::task::spawn_blocking(move || prune_backups(&dir, keep, &written)).await {
        Ok(Ok(removed)) => {
            for path in &removed {
                tracing::info!(path = %path.display(), keep, "old backup removed");
            }
            view.removed = removed.iter().map(|p| p.display().to_string()).collect();
        }
        Ok(Err(e)) => tracing::warn!(error = %e, dir = %state.backup_dir.display(), keep,
            "cannot remove old backups; the new one is complete"),
        Err(e) => tracing::warn!(error = %e, "the removal of old backups panicked"),
    }
    Ok((StatusCode::CREATED, Json(view)))
}
