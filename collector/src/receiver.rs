//! Receivers: where telemetry enters a pipeline.
//!
//! Every receiver follows the topology's two phases: [`ReceiverConfig::prepare`] opens what a
//! new config needs (new listeners, files) and can fail without touching what runs;
//! [`Prepared::commit`] switches over and cannot fail. A running receiver pushes into its
//! [`Output`], whose pipeline routes are swapped in place, so a new configuration reaches it
//! without touching its sockets: only a changed endpoint opens a new listener (before the old
//! one closes).

pub mod filelog;
pub mod hostmetrics;
pub mod kubeletstats;
mod looping;
pub mod otlp;

use std::any::Any;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use odigos_proto::Signal;

use crate::Batch;
use crate::ack::{Ack, Acks, Receipt};
use crate::config::{ComponentId, ParseError, parse_component};
use crate::consumer::{ConsumeError, Next};
use crate::topology::Context;
use crate::yaml::Value;

#[derive(Clone, Debug, PartialEq)]
pub enum ReceiverConfig {
    Otlp(otlp::OtlpConfig),
    Filelog(filelog::FilelogConfig),
    Hostmetrics(hostmetrics::HostmetricsConfig),
    Kubeletstats(kubeletstats::KubeletstatsConfig),
}

impl ReceiverConfig {
    pub const KINDS: &[&str] = &["filelog", "hostmetrics", "kubeletstats", "otlp"];

    pub(crate) fn parse(kind: &str, value: Value) -> Result<Self, ParseError> {
        match kind {
            "otlp" => parse_component(value).map(ReceiverConfig::Otlp),
            "filelog" => parse_component(value).map(ReceiverConfig::Filelog),
            "hostmetrics" => parse_component(value).map(ReceiverConfig::Hostmetrics),
            "kubeletstats" => parse_component(value).map(ReceiverConfig::Kubeletstats),
            _ => Err(ParseError::UnknownType { known: Self::KINDS }),
        }
    }

    pub fn signals(&self) -> &'static [Signal] {
        match self {
            ReceiverConfig::Otlp(_) => &Signal::ALL,
            ReceiverConfig::Filelog(_) => &[Signal::Logs],
            ReceiverConfig::Hostmetrics(_) | ReceiverConfig::Kubeletstats(_) => &[Signal::Metrics],
        }
    }

    /// Makes this config ready to run, reusing what `previous` (the running instance of the
    /// same receiver, if any) already has; nothing changes until [`Prepared::commit`].
    pub async fn prepare(
        &self,
        id: &ComponentId,
        previous: Option<&dyn Running>,
        routes: Routes,
        context: &Context,
    ) -> Result<Box<dyn Prepared>, Vec<String>> {
        match self {
            ReceiverConfig::Otlp(config) => {
                let previous = previous.and_then(|p| p.as_any().downcast_ref::<otlp::Running>());
                let prepared = otlp::prepare(config, id, previous, routes, context).await?;
                Ok(Box::new(prepared))
            }
            ReceiverConfig::Filelog(config) => Ok(Box::new(
                filelog::prepare(config, id, routes, context).await?,
            )),
            ReceiverConfig::Hostmetrics(config) => {
                Ok(Box::new(hostmetrics::prepare(config, id, routes, context)?))
            }
            ReceiverConfig::Kubeletstats(config) => Ok(Box::new(kubeletstats::prepare(
                config, id, routes, context,
            )?)),
        }
    }
}

/// A string attribute.
pub(crate) fn text(
    key: &str,
    value: impl Into<String>,
) -> odigos_proto::otlp::common::v1::KeyValue {
    use odigos_proto::otlp::common::v1::{AnyValue, KeyValue, any_value};
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// The metrics of one resource, from one scope.
pub(crate) fn resource_metrics(
    attributes: Vec<odigos_proto::otlp::common::v1::KeyValue>,
    scope: &odigos_proto::otlp::common::v1::InstrumentationScope,
    metrics: Vec<odigos_proto::otlp::metrics::v1::Metric>,
) -> odigos_proto::otlp::metrics::v1::ResourceMetrics {
    use odigos_proto::otlp::metrics::v1::{ResourceMetrics, ScopeMetrics};
    ResourceMetrics {
        resource: Some(odigos_proto::otlp::resource::v1::Resource {
            attributes,
            ..Default::default()
        }),
        scope_metrics: vec![ScopeMetrics {
            scope: Some(scope.clone()),
            metrics,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// What a receiver's `validate` says of the config in `yaml`, as `field.path: message` lines.
#[cfg(test)]
pub(crate) fn problems<C: crate::config::ComponentConfig>(yaml: &str) -> Vec<String> {
    let config: C = crate::yaml::from_value(crate::yaml::parse(yaml).unwrap()).unwrap();
    config
        .validate()
        .into_iter()
        .map(|(path, message)| format!("{}: {message}", path.join(".")))
        .collect()
}

/// Now, in nanoseconds since the epoch.
pub(crate) fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// `2024-05-01T10:00:00.123456789Z` (or with an offset) as nanoseconds since the epoch.
pub(crate) fn rfc3339_nanos(text: &str) -> Option<u64> {
    let (date, rest) = text.split_once('T')?;
    let mut date = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (date.next()??, date.next()??, date.next()??);
    let time_end = rest.find(['Z', 'z', '+', '-']).unwrap_or(rest.len());
    let (clock, zone) = rest.split_at(time_end);
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let mut hms = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hour, minute, second) = (hms.next()??, hms.next()??, hms.next()??);
    if !fraction.bytes().all(|b| b.is_ascii_digit()) || fraction.len() > 9 {
        return None;
    }
    let nanos: i64 = format!("{fraction:0<9}").parse().ok()?;
    let offset = match zone.as_bytes().first() {
        None | Some(b'Z' | b'z') => 0,
        Some(sign) => {
            let (h, m) = zone[1..].split_once(':')?;
            let minutes = h.parse::<i64>().ok()? * 60 + m.parse::<i64>().ok()?;
            if *sign == b'-' { -minutes } else { minutes }
        }
    };
    // Days since the epoch of a proleptic Gregorian date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset * 60;
    u64::try_from(seconds * 1_000_000_000 + nanos).ok()
}

/// A running receiver.
#[async_trait]
pub trait Running: Send + Sync {
    /// Where it listens or what it reads, e.g. `grpc 127.0.0.1:4317`.
    fn endpoints(&self) -> Vec<String>;
    /// Stops taking data, lets what is in progress finish, and returns when done.
    async fn stop(self: Box<Self>);
    fn as_any(&self) -> &dyn Any;
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
}

/// A config made ready for a receiver: new listeners open, nothing switched yet.
#[async_trait]
pub trait Prepared: Send {
    /// Switches to the new config; returns the running receiver and the servers it no longer
    /// needs, to be stopped by the caller. Cannot fail.
    fn commit(
        self: Box<Self>,
        previous: Option<Box<dyn Running>>,
    ) -> (Box<dyn Running>, Vec<Server>);
    /// Undoes the preparation: closes what it opened.
    async fn abort(self: Box<Self>);
}

/// Where a receiver sends each signal: the entry of the pipelines that list it.
#[derive(Default)]
pub struct Routes(pub [Option<Next>; 3]);

impl Routes {
    pub fn get(&self, signal: Signal) -> Option<&Next> {
        self.0[signal as usize].as_ref()
    }
}

/// What a receiver pushes into. Its routes change in place when the config does.
#[derive(Clone)]
pub struct Output {
    routes: Arc<ArcSwap<Routes>>,
}

impl Output {
    pub fn new(routes: Routes) -> Output {
        Output {
            routes: Arc::new(ArcSwap::from_pointee(routes)),
        }
    }

    /// Switches to new routes.
    pub fn reroute(&self, routes: Routes) {
        self.routes.store(Arc::new(routes));
    }

    /// Whether some pipeline takes `signal` from this receiver.
    pub fn takes(&self, signal: Signal) -> bool {
        self.routes.load().get(signal).is_some()
    }

    /// Pushes `batch` into the pipelines of its signal and returns once it is taken, with the
    /// receipt that says whether every destination accepted it. A receiver that checkpoints
    /// (a file offset, a message id) moves its checkpoint when the receipt says `Ok`.
    pub async fn push(&self, batch: Batch) -> Result<Receipt, ConsumeError> {
        let signal = batch.signal();
        let Some(next) = self.routes.load().get(signal).cloned() else {
            return Err(ConsumeError::Rejected(format!(
                "no pipeline takes {signal} from this receiver"
            )));
        };
        let (ack, receipt) = Ack::new();
        next.consume(batch.with_acks(Acks::one(ack))).await?;
        Ok(receipt)
    }

    /// Pushes `batch` and waits until every destination accepted it, or one refused it.
    pub async fn send(&self, batch: Batch) -> Result<(), ConsumeError> {
        self.push(batch).await?.await
    }
}

/// One listening server of a receiver (a protocol on an endpoint).
pub struct Server {
    pub protocol: &'static str,
    /// The configured endpoint, e.g. `localhost:4317` or `127.0.0.1:0`.
    pub endpoint: String,
    /// The address it listens on: `host:port`, or `unix:PATH`.
    pub local: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    /// A copy of the listening socket, for a successor with other settings to take over.
    pub(crate) socket: Option<Socket>,
}

/// A listening socket that can be handed to a new server on the same endpoint.
pub(crate) enum Socket {
    Tcp(std::net::TcpListener),
    /// With the flag that says it was handed over: the socket file is then not removed when
    /// the old server stops.
    Unix(
        std::os::unix::net::UnixListener,
        Arc<std::sync::atomic::AtomicBool>,
    ),
}

impl Socket {
    /// Another handle on the same socket.
    pub(crate) fn try_clone(&self) -> std::io::Result<Socket> {
        Ok(match self {
            Socket::Tcp(listener) => Socket::Tcp(listener.try_clone()?),
            Socket::Unix(listener, handed_over) => {
                Socket::Unix(listener.try_clone()?, handed_over.clone())
            }
        })
    }
}

impl Server {
    /// Runs `serve`, given the future that resolves when the server is told to stop, as the
    /// server's task; a failure is logged.
    pub(crate) fn spawn<F, E>(
        protocol: &'static str,
        endpoint: &str,
        local: String,
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
            local,
            stop,
            task,
            socket: None,
        }
    }

    /// Keeps a copy of the listening socket, so that a successor can take it over.
    pub(crate) fn with_socket(mut self, socket: Socket) -> Server {
        self.socket = Some(socket);
        self
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
