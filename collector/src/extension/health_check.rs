//! `health_check`: answers `200` on its path while the collector runs its pipelines, `503`
//! before they are up and while it shuts down, as otelcol's extension does.

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{ExtensionConfig, Status};
use crate::config::ComponentConfig;
use crate::topology::Context;

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckConfig {
    /// `host:port` to serve on (`0.0.0.0:13133` or `:13133` for every interface).
    pub endpoint: String,
    /// The path that answers.
    pub path: String,
    /// Bodies to answer with instead of the default JSON status.
    pub response_body: Option<ResponseBody>,
}

/// `response_body`: the text answered when healthy and when not.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseBody {
    pub healthy: String,
    pub unhealthy: String,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        HealthCheckConfig {
            endpoint: "localhost:13133".into(),
            path: "/".into(),
            response_body: None,
        }
    }
}

impl ComponentConfig for HealthCheckConfig {
    fn validate(&self) -> Vec<(Vec<String>, String)> {
        let mut problems = super::check_endpoint(&self.endpoint);
        if !self.path.starts_with('/') {
            problems.push((
                vec!["path".into()],
                format!("{:?} must start with /", self.path),
            ));
        }
        problems
    }
}

pub(super) fn router(settings: Arc<ArcSwap<ExtensionConfig>>, context: &Context) -> axum::Router {
    let status = context.status.clone();
    axum::Router::new().fallback(move |uri: Uri| {
        let settings = settings.load_full();
        let status = status.clone();
        async move {
            let ExtensionConfig::HealthCheck(config) = &*settings else {
                return StatusCode::NOT_FOUND.into_response();
            };
            if uri.path() != config.path {
                return (StatusCode::NOT_FOUND, "404 page not found\n").into_response();
            }
            answer(config, &status)
        }
    })
}

fn answer(config: &HealthCheckConfig, status: &Status) -> Response {
    let ready = status.ready();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    if let Some(body) = &config.response_body {
        let text = if ready {
            &body.healthy
        } else {
            &body.unhealthy
        };
        return (code, text.clone()).into_response();
    }
    let uptime = status.started.elapsed().unwrap_or_default();
    let body = serde_json::json!({
        "status": if ready { "Server available" } else { "Server not available" },
        "upSince": super::rfc3339(status.started),
        "uptime": format!("{:.3}s", uptime.as_secs_f64()),
    });
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}
