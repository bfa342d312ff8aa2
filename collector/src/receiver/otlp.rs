//! The OTLP receiver: gRPC and HTTP (protobuf and JSON) for traces, metrics and logs.

mod grpc;
mod http;

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use odigos_proto::{Signal, wire};
use serde::{Deserialize, Deserializer};

use super::{Output, Routes, Server};
use crate::config::{ComponentConfig, ComponentId};
use crate::consumer::ConsumeError;
use crate::receiver;
use crate::telemetry::{Counter, Registry};
use crate::topology::Context;
use crate::{Batch, Decoded};

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    pub protocols: Protocols,
}

#[derive(Clone, Debug, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Protocols {
    /// OTLP/gRPC; `grpc:` with no settings enables it with defaults.
    #[serde(default, deserialize_with = "enabled")]
    pub grpc: Option<GrpcConfig>,
    /// OTLP/HTTP; `http:` with no settings enables it with defaults.
    #[serde(default, deserialize_with = "enabled")]
    pub http: Option<HttpConfig>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    /// `host:port` to listen on, or the socket's path with `transport: unix`.
    pub endpoint: String,
    /// `tcp`, or `unix` for a Unix domain socket.
    pub transport: Transport,
    /// Largest request accepted, in MiB.
    pub max_recv_msg_size_mib: usize,
    /// Most concurrent streams (requests) per HTTP/2 connection; 0 leaves it unbounded.
    pub max_concurrent_streams: u32,
    /// Server-side keepalive.
    pub keepalive: Option<KeepaliveConfig>,
    /// Keep each request's metadata (headers) with its data. Refused when `true`: no
    /// component of this collector reads client metadata yet.
    pub include_metadata: bool,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            endpoint: "localhost:4317".into(),
            transport: Transport::Tcp,
            max_recv_msg_size_mib: 4,
            max_concurrent_streams: 0,
            keepalive: None,
            include_metadata: false,
        }
    }
}

/// `keepalive` of the gRPC server, as otelcol's.
#[derive(Clone, Debug, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeepaliveConfig {
    pub server_parameters: Option<ServerParameters>,
    /// Refused unless empty: this server does not police how often clients ping.
    pub enforcement_policy: Option<EnforcementPolicy>,
}

/// How the server keeps connections alive and recycles them.
#[derive(Clone, Debug, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerParameters {
    /// Refused: closing idle connections is not supported by this gRPC server.
    #[serde(with = "option_duration")]
    pub max_connection_idle: Option<Duration>,
    /// Connections older than this are asked to go away (then given `max_connection_age_grace`
    /// to finish their requests).
    #[serde(with = "option_duration")]
    pub max_connection_age: Option<Duration>,
    #[serde(with = "option_duration")]
    pub max_connection_age_grace: Option<Duration>,
    /// After this long without activity the server pings the client.
    #[serde(with = "option_duration")]
    pub time: Option<Duration>,
    /// How long the server waits for the ping's answer before closing the connection.
    #[serde(with = "option_duration")]
    pub timeout: Option<Duration>,
}

/// The client keepalive policy of otelcol's gRPC server.
#[derive(Clone, Debug, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnforcementPolicy {
    #[serde(with = "option_duration")]
    pub min_time: Option<Duration>,
    pub permit_without_stream: Option<bool>,
}

/// Durations that may be left out.
mod option_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "crate::yaml::duration")] Duration);
        Ok(Option::<Wrapped>::deserialize(d)?.map(|w| w.0))
    }
}

/// `cors` of the HTTP receiver: which web pages may send telemetry from a browser.
#[derive(Clone, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Origins allowed, e.g. `https://*.example.com`; `*` allows any. Empty turns CORS off.
    pub allowed_origins: Vec<String>,
    /// Request headers allowed beyond the simple ones (`Accept`, `Content-Type`, ...); `*`
    /// allows any.
    pub allowed_headers: Vec<String>,
    /// How long a browser may cache a preflight answer, in seconds (0: not said).
    pub max_age: u64,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `host:port` to listen on.
    pub endpoint: String,
    pub traces_url_path: String,
    pub metrics_url_path: String,
    pub logs_url_path: String,
    /// Largest request body accepted, in bytes, after decompression.
    pub max_request_body_size: usize,
    /// Cross-origin requests from browsers.
    pub cors: Option<CorsConfig>,
    /// Keep each request's metadata (headers) with its data. Refused when `true`: no
    /// component of this collector reads client metadata yet.
    pub include_metadata: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            endpoint: "localhost:4318".into(),
            traces_url_path: "/v1/traces".into(),
            metrics_url_path: "/v1/metrics".into(),
            logs_url_path: "/v1/logs".into(),
            max_request_body_size: 20 << 20,
            cors: None,
            include_metadata: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Tcp,
    Unix,
}

impl GrpcConfig {
    /// Where it listens: `host:port`, or `unix:PATH`.
    fn address(&self) -> String {
        match self.transport {
            Transport::Tcp => self.endpoint.clone(),
            Transport::Unix => format!("unix:{}", self.endpoint),
        }
    }
}

fn enabled<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(
    d: D,
) -> Result<Option<T>, D::Error> {
    Ok(Some(Option::<T>::deserialize(d)?.unwrap_or_default()))
}

impl ComponentConfig for OtlpConfig {
    fn validate(&self) -> Vec<(Vec<String>, String)> {
        let mut problems = Vec::new();
        if self.protocols.grpc.is_none() && self.protocols.http.is_none() {
            problems.push((vec!["protocols".into()], "enable grpc, http or both".into()));
        }
        let metadata = "include_metadata: true is not supported: no component of this collector \
                        reads client metadata (such as batch metadata_keys or a headers_setter \
                        extension); remove it";
        if let Some(grpc) = &self.protocols.grpc {
            let at = |path: &[&str]| {
                ["protocols", "grpc"]
                    .iter()
                    .chain(path)
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
            };
            if grpc.include_metadata {
                problems.push((at(&["include_metadata"]), metadata.into()));
            }
            if let Some(keepalive) = &grpc.keepalive {
                if keepalive
                    .server_parameters
                    .as_ref()
                    .is_some_and(|p| p.max_connection_idle.is_some())
                {
                    problems.push((
                        at(&["keepalive", "server_parameters", "max_connection_idle"]),
                        "max_connection_idle is not supported: this gRPC server cannot close \
                         idle connections (max_connection_age recycles connections); remove it"
                            .into(),
                    ));
                }
                if keepalive
                    .enforcement_policy
                    .as_ref()
                    .is_some_and(|p| p != &EnforcementPolicy::default())
                {
                    problems.push((
                        at(&["keepalive", "enforcement_policy"]),
                        "enforcement_policy is not supported: this gRPC server does not police how \
                         often clients ping (it closes no connection for pinging); remove it"
                            .into(),
                    ));
                }
            }
        }
        if let Some(http) = &self.protocols.http {
            if http.include_metadata {
                problems.push((
                    vec!["protocols".into(), "http".into(), "include_metadata".into()],
                    metadata.into(),
                ));
            }
            if let Some(cors) = &http.cors {
                for (i, origin) in cors.allowed_origins.iter().enumerate() {
                    if origin.matches('*').count() > 1 {
                        problems.push((
                            vec![
                                "protocols".into(),
                                "http".into(),
                                "cors".into(),
                                "allowed_origins".into(),
                                i.to_string(),
                            ],
                            format!("{origin:?} may hold at most one *"),
                        ));
                    }
                }
            }
            for (field, path) in [
                ("traces_url_path", &http.traces_url_path),
                ("metrics_url_path", &http.metrics_url_path),
                ("logs_url_path", &http.logs_url_path),
            ] {
                if !path.starts_with('/') {
                    problems.push((
                        vec!["protocols".into(), "http".into(), field.into()],
                        format!("{path:?} must start with /"),
                    ));
                }
            }
        }
        problems
    }
}

/// A running OTLP receiver: its servers, and the output and settings they read per request.
pub struct Running {
    output: Output,
    settings: Arc<ArcSwap<OtlpConfig>>,
    servers: Vec<Server>,
}

#[async_trait]
impl receiver::Running for Running {
    fn endpoints(&self) -> Vec<String> {
        self.servers
            .iter()
            .map(|s| format!("{} {}", s.protocol, s.local))
            .collect()
    }

    async fn stop(self: Box<Self>) {
        for server in self.servers {
            server.stop().await;
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

/// A configuration made ready for a receiver: new listeners opened, nothing switched yet.
pub struct Prepared {
    config: OtlpConfig,
    output: Output,
    /// Routes to switch to on commit, for a receiver that was already running.
    next_routes: Option<Routes>,
    settings: Arc<ArcSwap<OtlpConfig>>,
    started: Vec<Server>,
}

/// Opens what `config` needs that `previous` does not already listen on. A server whose
/// protocol and endpoint are unchanged is kept, with its socket and its open connections.
/// Every protocol that cannot start is reported.
pub(super) async fn prepare(
    config: &OtlpConfig,
    id: &ComponentId,
    previous: Option<&Running>,
    routes: Routes,
    context: &Context,
) -> Result<Prepared, Vec<String>> {
    let (output, next_routes, settings) = match previous {
        Some(running) => (
            running.output.clone(),
            Some(routes),
            running.settings.clone(),
        ),
        None => (
            Output::new(routes),
            None,
            Arc::new(ArcSwap::from_pointee(config.clone())),
        ),
    };
    let mut prepared = Prepared {
        config: config.clone(),
        output,
        next_routes,
        settings,
        started: Vec::new(),
    };
    let wanted = [
        (
            "grpc",
            config.protocols.grpc.as_ref().map(GrpcConfig::address),
        ),
        (
            "http",
            config.protocols.http.as_ref().map(|h| h.endpoint.clone()),
        ),
    ];
    // A gRPC server's own settings (streams, keepalive) are fixed when it starts: when they
    // change, a new server takes over the same socket.
    let grpc_settings = |c: &OtlpConfig| {
        c.protocols
            .grpc
            .as_ref()
            .map(|g| (g.max_concurrent_streams, g.keepalive.clone()))
    };
    let mut errors = Vec::new();
    for (protocol, endpoint) in wanted {
        let Some(endpoint) = endpoint else { continue };
        let same_endpoint = previous.and_then(|p| {
            p.servers
                .iter()
                .find(|s| s.protocol == protocol && s.endpoint == endpoint)
        });
        let same_settings = protocol != "grpc"
            || previous.is_some_and(|p| grpc_settings(&p.settings.load()) == grpc_settings(config));
        if same_endpoint.is_some() && same_settings {
            continue;
        }
        let socket = same_endpoint
            .and_then(|s| s.socket.as_ref())
            .and_then(|s| s.try_clone().ok());
        let ingest = Ingest::new(id, protocol, prepared.output.clone(), context);
        let started = match (protocol, &config.protocols.grpc) {
            ("grpc", Some(grpc)) => {
                grpc::start(&endpoint, grpc, socket, ingest, prepared.settings.clone()).await
            }
            _ => http::start(&endpoint, ingest, prepared.settings.clone()).await,
        };
        match started {
            Ok(server) => prepared.started.push(server),
            Err(e) => errors.push(format!("{protocol}: {e}")),
        }
    }
    if !errors.is_empty() {
        receiver::Prepared::abort(Box::new(prepared)).await;
        return Err(errors);
    }
    Ok(prepared)
}

#[async_trait]
impl receiver::Prepared for Prepared {
    fn commit(
        self: Box<Self>,
        previous: Option<Box<dyn receiver::Running>>,
    ) -> (Box<dyn receiver::Running>, Vec<Server>) {
        let previous = previous.and_then(|p| p.into_any().downcast::<Running>().ok());
        if let Some(routes) = self.next_routes {
            self.output.reroute(routes);
        }
        self.settings.store(Arc::new(self.config.clone()));
        let mut servers = self.started;
        let mut retired = Vec::new();
        for server in previous.map(|p| p.servers).unwrap_or_default() {
            let replaced = servers.iter().any(|s| s.protocol == server.protocol);
            let enabled = match server.protocol {
                "grpc" => self.config.protocols.grpc.is_some(),
                _ => self.config.protocols.http.is_some(),
            };
            if replaced || !enabled {
                retired.push(server);
            } else {
                servers.push(server);
            }
        }
        servers.sort_by_key(|s| s.protocol);
        let running = Running {
            output: self.output,
            settings: self.settings,
            servers,
        };
        (Box::new(running), retired)
    }

    async fn abort(self: Box<Self>) {
        for server in self.started {
            server.stop().await;
        }
    }
}

/// What both transports do with a request: validate, count, hand to the pipeline, and wait
/// until every destination's queue has accepted it.
struct Ingest {
    output: Output,
    accepted: [Counter; 3],
    refused: [Counter; 3],
    by_service: ByService,
}

enum IngestError {
    /// Malformed data: the client must not retry.
    Invalid(String),
    /// No pipeline takes this signal from this receiver.
    Unsupported(Signal),
    /// Full: retry later.
    Exhausted(String),
    /// Refused downstream for good.
    Rejected(String),
}

impl Ingest {
    fn new(id: &ComponentId, transport: &str, output: Output, context: &Context) -> Ingest {
        let counter = |outcome: &str, signal: Signal| {
            let name = format!("otelcol_receiver_{outcome}_{}", signal.item_name());
            let help = if outcome == "accepted" {
                "Items successfully pushed into the pipeline."
            } else {
                "Items that could not be pushed into the pipeline."
            };
            context.registry.counter(
                &name,
                help,
                &[("receiver", id.as_str()), ("transport", transport)],
            )
        };
        Ingest {
            output,
            accepted: Signal::ALL.map(|s| counter("accepted", s)),
            refused: Signal::ALL.map(|s| counter("refused", s)),
            by_service: ByService {
                registry: context.registry.clone(),
                receiver: id.to_string(),
                counters: Mutex::default(),
            },
        }
    }

    fn check(&self, signal: Signal) -> Result<(), IngestError> {
        if self.output.takes(signal) {
            Ok(())
        } else {
            Err(IngestError::Unsupported(signal))
        }
    }

    /// Validates an encoded request and pushes it on.
    async fn encoded(&self, signal: Signal, bytes: Bytes) -> Result<(), IngestError> {
        self.check(signal)?;
        let mut services = Vec::new();
        let scan = wire::scan_resources(signal, &bytes, |entry, items| {
            services.push((wire::service_name(entry), items));
        })
        .map_err(|e| IngestError::Invalid(e.to_string()))?;
        let batch = Batch::trusted(signal, bytes.clone(), scan.items);
        self.push(batch).await?;
        for (service, items) in services {
            self.by_service.add(signal, service, items);
        }
        Ok(())
    }

    /// Validates an OTLP JSON request and pushes it on, encoded as protobuf like any other.
    async fn json(&self, signal: Signal, json: &[u8]) -> Result<(), IngestError> {
        self.check(signal)?;
        let decoded = Decoded::from_json(signal, json)
            .map_err(|e| IngestError::Invalid(format!("invalid OTLP JSON: {e}")))?;
        self.encoded(signal, decoded.encode()).await
    }

    async fn push(&self, batch: Batch) -> Result<(), IngestError> {
        let signal = batch.signal();
        let index = signal as usize;
        let items = batch.items();
        if items == 0 {
            return Ok(());
        }
        match self.output.send(batch).await {
            Ok(()) => {
                self.accepted[index].add(items);
                Ok(())
            }
            Err(e) => {
                self.refused[index].add(items);
                Err(match e {
                    ConsumeError::Exhausted(m) => IngestError::Exhausted(m),
                    ConsumeError::Rejected(m) => IngestError::Rejected(m),
                })
            }
        }
    }
}

/// Items accepted per `service.name` and signal: the throughput of each source that the
/// control plane shows. Services beyond the first [`MAX_SERVICES`] of a signal count as
/// `(other)`.
struct ByService {
    registry: Registry,
    receiver: String,
    /// By signal, then service.
    counters: Mutex<[HashMap<String, Counter>; 3]>,
}

const MAX_SERVICES: usize = 1000;

impl ByService {
    fn add(&self, signal: Signal, service: Option<&str>, items: usize) {
        if items == 0 {
            return;
        }
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let counters = &mut counters[signal as usize];
        let mut service = service.unwrap_or("");
        if let Some(counter) = counters.get(service) {
            counter.add(items);
            return;
        }
        if counters.len() >= MAX_SERVICES {
            service = "(other)";
        }
        let labels = [
            ("receiver", self.receiver.as_str()),
            ("signal", signal.as_str()),
            ("service", service),
        ];
        let help = "Items pushed into the pipeline, by the service.name of their resource.";
        counters
            .entry(service.to_string())
            .or_insert_with(|| {
                self.registry
                    .counter("odigos_receiver_accepted_items", help, &labels)
            })
            .add(items);
    }
}

#[cfg(test)]
mod tests;
