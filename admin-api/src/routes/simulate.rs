//! Dry runs: `POST /admin/simulate`.

use axum::extract::State;
use leadroute_engine::EngineError;
use leadroute_engine::domain::{LeadId, LeadInput, TerritoryId};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::dto::{SimulateBody, SimulationView};
use crate::error::{AppError, ErrorBody};
use crate::extract::Json;
use crate::state::AppState;

/// Returns the simulation route.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(simulate))
}

fn unknown_territory(t: impl std::fmt::Display) -> AppError {
    AppError::invalid(
        "unknown_territory",
        "territory_id",
        format!("territory {t} does not exist"),
    )
}

/// Shows the decision routing would make for a lead now, with the candidates and
/// timings: with the territory's own strategy, or with `plugin` (a stored version, or
/// the active one) and the territory's `plugin_config`. Nothing is stored, no load is
/// taken, and plugin statistics are left alone.
#[utoipa::path(
    post, path = "/admin/simulate", tag = "simulate",
    request_body = SimulateBody,
    responses(
        (status = 200, description = "The decision.", body = SimulationView),
        (status = 400, description = "Malformed JSON or wrong content type.", body = ErrorBody),
        (status = 401, description = "Missing or unknown token.", body = ErrorBody),
        (status = 403, description = "Not the admin token.", body = ErrorBody),
        (status = 413, description = "Body over the JSON limit (64 KiB by default).", body = ErrorBody),
        (status = 422, description = "Invalid lead (`lead.<field>`), `unknown_territory`, \
            `no_territory`, `unknown_plugin` (`plugin.name` or `plugin.version`), or a \
            `plugin_config` the plugin refuses.", body = ErrorBody),
        (status = 503, description = "`shutting_down`. `Retry-After: 1`.", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn simulate(
    State(state): State<AppState>,
    Json(body): Json<SimulateBody>,
) -> Result<Json<SimulationView>, AppError> {
    let territory = body
        .territory_id
        .as_deref()
        .map(|t| TerritoryId::new(t).map_err(|_| unknown_territory(t)))
        .transpose()?;
    let lead: LeadInput = body.lead.into();
    // Checked here first, so the engine's validation errors below can only be about
    // the plugin or the territory, and lead errors name `lead.<field>`.
    lead.validate(LeadId::from_ulid(ulid::Ulid::nil()), 0)
        .map_err(|v| AppError::from(EngineError::Invalid(v)).prefixed("lead"))?;
    let plugin = body.plugin.as_ref().map(|p| (p.name.as_str(), p.version));
    let simulation = state
        .engine
        .simulate_with(&lead, territory.as_ref(), plugin)
        .await
        .map_err(|e| match e {
            EngineError::TerritoryNotFound(t) => unknown_territory(t),
            // The plugin is named in the body: bad input, not a missing resource.
            EngineError::PluginNotFound { name, version } => match version {
                Some(v) => AppError::invalid(
                    "unknown_plugin",
                    "plugin.version",
                    format!("plugin {name} has no version {v}"),
                ),
                None => AppError::invalid(
                    "unknown_plugin",
                    "plugin.name",
                    format!("plugin {name} is not installed"),
                ),
            },
            // The lead is nested here, and so is the field.
            e @ EngineError::NoTerritory { .. } => AppError::from(e).with_field("lead.region"),
            e => e.into(),
        })?;
    let duplicate_of = simulation.duplicate_of;
    let mut view = SimulationView::from(simulation);
    // A duplicate would stay with the existing lead's rep, whatever the ranking says.
    if let Some(existing) = duplicate_of {
        view.rep_id = state
            .engine
            .lead(existing)?
            .and_then(|l| l.state.rep)
            .map(String::from);
    }
    Ok(Json(view))
}
