//! A small HTTP API over the fleet, beside the OpAMP endpoint: list agents, assign configs.
//! It takes the same bearer token as the OpAMP endpoint.
//!
//! - `GET /api/v1/agents`: every agent as JSON.
//! - `GET /api/v1/state`: the desired state and how it stands (with a control plane).
//! - `PUT /api/v1/config[?role=R | ?uid=HEX][&file=NAME]`: the body becomes the config of the
//!   agents chosen (all by default), over what the control plane assigns them; the reply is
//!   `{"hash": "..."}`.
//! - `DELETE /api/v1/config[?role=R | ?uid=HEX]`: withdraws that config; the control plane's
//!   applies again.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use odigos_proto::opamp::parse_uid;

use crate::opamp::{Fleet, Selector};
use crate::reconciler::ControlPlane;

pub fn router(fleet: Arc<Fleet>, plane: Option<Arc<ControlPlane>>) -> axum::Router {
    let state = Arc::new(Api { fleet, plane });
    axum::Router::new()
        .route("/api/v1/agents", axum::routing::get(agents))
        .route("/api/v1/state", axum::routing::get(desired_state))
        .route(
            "/api/v1/config",
            axum::routing::put(config).delete(withdraw),
        )
        .with_state(state)
}

struct Api {
    fleet: Arc<Fleet>,
    plane: Option<Arc<ControlPlane>>,
}

async fn agents(State(api): State<Arc<Api>>) -> Response {
    Json(api.fleet.agents()).into_response()
}

async fn desired_state(State(api): State<Arc<Api>>) -> Response {
    match &api.plane {
        Some(plane) => Json(plane.state()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "this server has no desired state: it only serves the fleet",
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct Target {
    role: Option<String>,
    uid: Option<String>,
    file: Option<String>,
}

/// The agents a request names, or why it names none.
fn selector(target: &Target) -> Result<Selector, String> {
    match (&target.role, &target.uid) {
        (None, None) => Ok(Selector::All),
        (Some(role), None) => Ok(Selector::Attribute {
            key: "odigos.role".into(),
            value: role.clone(),
        }),
        (None, Some(uid)) => parse_uid(uid)
            .map(Selector::Agent)
            .ok_or_else(|| format!("uid {uid:?} is not 32 hex digits")),
        (Some(_), Some(_)) => Err("give role or uid, not both".into()),
    }
}

async fn config(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Query(target): Query<Target>,
    body: Bytes,
) -> Response {
    let selector = match selector(&target) {
        Ok(selector) => selector,
        Err(refused) => return (StatusCode::BAD_REQUEST, refused).into_response(),
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("text/yaml")
        .to_string();
    let file = target.file.unwrap_or_else(|| "collector.yaml".into());
    let hash = api
        .fleet
        .set_config(selector, [(file, (body.to_vec(), content_type))].into());
    Json(serde_json::json!({ "hash": hash })).into_response()
}

async fn withdraw(State(api): State<Arc<Api>>, Query(target): Query<Target>) -> Response {
    match selector(&target) {
        Ok(selector) => {
            api.fleet.unset_config(&selector);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(refused) => (StatusCode::BAD_REQUEST, refused).into_response(),
    }
}
