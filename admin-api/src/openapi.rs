//! The OpenAPI document's frame: title, tags and the two bearer schemes. The paths
//! and schemas come from the `#[utoipa::path]` annotations on the handlers, collected
//! as the router is built (see [`crate::routes`]).

use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

use crate::error::ErrorBody;

/// The document's frame.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "leadroute",
        description = "Real-time lead routing: intake, lead lifecycle, reps and territories, \
            simulation, operations. Every 4xx/5xx body is `{\"error\": {\"code\", \"message\", \
            \"field\"?}}`.",
        license(name = "Apache-2.0"),
    ),
    modifiers(&BearerSchemes),
    components(schemas(ErrorBody)),
    tags(
        (name = "intake", description = "New leads; intake or admin token."),
        (name = "leads", description = "Leads after intake; intake or admin token."),
        (name = "reps", description = "Sales reps; admin token."),
        (name = "territories", description = "Territories; admin token."),
        (name = "simulate", description = "Dry runs; admin token."),
        (name = "plugins", description = "Routing plugins (WebAssembly); admin token."),
        (name = "webhooks", description = "Signed event deliveries with retries and dead letters; admin token."),
        (name = "operations", description = "Health, readiness, metrics, this document: no token. Backups: admin token."),
    )
)]
pub struct ApiDoc;

/// Adds the `intake_token` and `admin_token` bearer schemes.
struct BearerSchemes;

impl Modify for BearerSchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, what) in [
            (
                "intake_token",
                "The intake token (LEADROUTE_INTAKE_TOKEN): opens /v1/*.",
            ),
            (
                "admin_token",
                "The admin token (LEADROUTE_ADMIN_TOKEN): opens /admin/* and /v1/*.",
            ),
        ] {
            let mut scheme = Http::new(HttpAuthScheme::Bearer);
            scheme.description = Some(what.to_string());
            components.add_security_scheme(name, SecurityScheme::Http(scheme));
        }
    }
}
