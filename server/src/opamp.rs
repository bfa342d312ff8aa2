//! The OpAMP server: one path (`/v1/opamp`) for both transports, WebSocket and plain HTTP.
//!
//! [`Fleet`] holds what the server knows of each agent, keyed by `instance_uid` (not by
//! connection), and the configs it should run; the transports only move messages.

mod fleet;
mod http;
mod ws;

use std::sync::Arc;

pub use fleet::{
    AgentBrief, AgentView, ComponentView, ConfigEvent, ConfigStatus, Fleet, POD_IP, Selector,
    metrics_address,
};

/// The OpAMP path.
pub const PATH: &str = "/v1/opamp";
/// The header odiglet sets on the SDK agents' messages it relays (its value: the node): they
/// may speak only for SDK agents.
pub const SDK_RELAY_HEADER: &str = "x-odigos-sdk-relay";

/// Builds the router serving [`PATH`] for `fleet`; past `max_concurrent_requests` plain HTTP
/// requests at once, agents get 503 with Retry-After.
pub fn router(fleet: Arc<Fleet>, max_concurrent_requests: usize) -> axum::Router {
    let state = Arc::new(http::Endpoint::new(fleet, max_concurrent_requests));
    axum::Router::new()
        .route(PATH, axum::routing::any(http::handle))
        .with_state(state)
}

#[cfg(test)]
mod tests;
