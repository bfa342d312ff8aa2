//! Receivers: where telemetry enters a pipeline.

pub mod otlp;

use std::collections::HashMap;
use std::net::SocketAddr;

use odigos_proto::Signal;

use crate::config::{ComponentId, ParseError, parse_component};
use crate::consumer::Next;
use crate::topology::Context;
use crate::yaml::Value;

#[derive(Clone, Debug, PartialEq)]
pub enum ReceiverConfig {
    Otlp(otlp::OtlpConfig),
}

impl ReceiverConfig {
    pub const KINDS: &[&str] = &["otlp"];

    pub(crate) fn parse(kind: &str, value: Value) -> Result<Self, ParseError> {
        match kind {
            "otlp" => parse_component(value).map(ReceiverConfig::Otlp),
            _ => Err(ParseError::UnknownType { known: Self::KINDS }),
        }
    }

    pub fn signals(&self) -> &'static [Signal] {
        &Signal::ALL
    }

    /// Binds the receiver's sockets and starts serving; `consumers` has the pipeline entry for
    /// each signal this receiver feeds.
    pub async fn start(
        &self,
        id: &ComponentId,
        consumers: HashMap<Signal, Next>,
        context: &Context,
    ) -> Result<Running, String> {
        match self {
            ReceiverConfig::Otlp(config) => otlp::start(config, id, consumers, context).await,
        }
    }
}

/// A started receiver; dropping it does not stop it, [`Running::stop`] does.
pub struct Running {
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    servers: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops accepting new requests, lets requests in progress finish, and returns when done.
    pub async fn stop(self) {
        for stop in self.stops {
            let _ = stop.send(());
        }
        for server in self.servers {
            let _ = server.await;
        }
    }
}

/// Resolves `host:port` (a name such as `localhost` included) to one socket address.
pub async fn resolve(address: &str) -> std::io::Result<SocketAddr> {
    let address = address.strip_prefix("http://").unwrap_or(address);
    tokio::net::lookup_host(address)
        .await?
        .next()
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{address} resolves to nothing"),
            )
        })
}

/// Binds a TCP listener, naming the address in the error.
pub async fn listen(address: &str) -> Result<tokio::net::TcpListener, String> {
    let addr = resolve(address)
        .await
        .map_err(|e| format!("cannot resolve {address}: {e}"))?;
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))
}
