//! The supervisor: the OpAMP client inside every managed process (collector, odiglet).
//!
//! It connects to the server over WebSocket (falling back to plain HTTP polling when the server
//! does not upgrade), reports the agent's description, health, effective config and the status
//! of each remote config, and applies remote configs through [`Apply`]: validate, build, swap.
//! A config that fails is reported FAILED with its error and the previous one keeps running.
//! The instance uid and the last config applied are kept on disk, so a restart comes back to
//! the last good config without waiting for the server.

mod session;
mod state;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use odigos_proto::opamp::{AgentDescription, AnyValue, ComponentHealth, KeyValue, any_value};

pub use session::run;

/// Config files by name: body and MIME content type.
pub type Files = BTreeMap<String, (Vec<u8>, String)>;

/// What a managed process does with configs.
#[async_trait]
pub trait Apply: Send + Sync + 'static {
    /// Validates, builds and swaps in `files`. On error nothing that runs may change.
    async fn apply(&self, files: &Files) -> Result<(), String>;

    /// The config in effect, secrets redacted.
    async fn effective_config(&self) -> Files;

    /// Overall and per-component health.
    async fn health(&self) -> ComponentHealth;
}

/// How the supervisor connects and describes its agent.
#[derive(Clone, Debug)]
pub struct Options {
    /// `ws://host:4320/v1/opamp` (WebSocket) or `http://...` (polling).
    pub endpoint: String,
    /// Sent as `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Where the instance uid and the last applied config are kept.
    pub state_dir: PathBuf,
    /// Identifying attributes (`service.name`, ...); `service.instance.id` is added.
    pub identifying: Vec<(String, String)>,
    /// Attributes that describe where the agent runs (`odigos.role`, `host.name`, ...).
    pub non_identifying: Vec<(String, String)>,
    /// How often to say "still here" (and, over HTTP, to poll).
    pub heartbeat: Duration,
    /// For `wss://`: trust the CA certificates in this PEM file instead of the public roots.
    pub ca_file: Option<PathBuf>,
}

impl Options {
    pub(crate) fn description(&self, uid: &str) -> AgentDescription {
        let kv = |(key, value): &(String, String)| KeyValue {
            key: key.clone(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.clone())),
            }),
        };
        let mut identifying: Vec<KeyValue> = self.identifying.iter().map(kv).collect();
        identifying.push(kv(&("service.instance.id".into(), uid.into())));
        AgentDescription {
            identifying_attributes: identifying,
            non_identifying_attributes: self.non_identifying.iter().map(kv).collect(),
        }
    }
}
