//! Receivers: where telemetry enters a pipeline.
//!
//! A running receiver reads its pipeline routes and its settings through `ArcSwap`s, so a new
//! configuration reaches it without touching its sockets: only a changed endpoint opens a new
//! listener (before the old one closes).

pub mod otlp;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use arc_swap::ArcSwap;
use odigos_proto::Signal;

use crate::config::{ParseError, parse_component};
use crate::consumer::Next;
use crate::yaml::Value;

pub use otlp::Running;

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
}

/// Where a receiver sends each signal: the entry of the pipelines that list it.
#[derive(Default)]
pub struct Routes(pub [Option<Next>; 3]);

impl Routes {
    pub fn get(&self, signal: Signal) -> Option<&Next> {
        self.0[signal as usize].as_ref()
    }
}

pub type SharedRoutes = Arc<ArcSwap<Routes>>;

/// One listening server of a receiver (a protocol on an endpoint).
pub struct Server {
    pub protocol: &'static str,
    pub endpoint: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Runs `serve`, given the future that resolves when the server is told to stop, as the
    /// server's task; a failure is logged.
    pub(crate) fn spawn<F, E>(
        protocol: &'static str,
        endpoint: &str,
        serve: impl FnOnce(Pin<Box<dyn Future<Output = ()> + Send>>) -> F,
    ) -> Server
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = serve(Box::pin(async move {
            let _ = stopped.await;
        }));
        let endpoint = endpoint.to_string();
        let logged = endpoint.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = serving.await {
                tracing::error!(protocol, endpoint = %logged, error = %e, "server failed");
            }
        });
        Server {
            protocol,
            endpoint,
            stop,
            task,
        }
    }

    /// Stops accepting connections, lets requests in progress finish, and returns when done.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
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
