//! The supervisor's connection loop: WebSocket sessions (or HTTP polling when the server does
//! not upgrade), reconnecting with exponential backoff and jitter.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use odigos_proto::opamp::*;
use prost::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message as Frame};

use crate::state::State;
use crate::{Apply, Files, Options};

const CAPABILITIES: &[AgentCapabilities] = &[
    AgentCapabilities::ReportsStatus,
    AgentCapabilities::AcceptsRemoteConfig,
    AgentCapabilities::ReportsEffectiveConfig,
    AgentCapabilities::ReportsHealth,
    AgentCapabilities::ReportsRemoteConfig,
    AgentCapabilities::ReportsHeartbeat,
];

/// Runs the supervisor until `shutdown` resolves, then tells the server it is leaving.
pub async fn run(
    options: Options,
    applier: Arc<dyn Apply>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let (leaving, left) = tokio::sync::watch::channel(false);
    let mut agent = Agent::new(options, applier, left)?;
    agent.restore().await;
    tokio::pin!(shutdown);
    let mut backoff = Backoff::default();
    let mut http_only = agent.options.endpoint.starts_with("http");
    loop {
        let started = Instant::now();
        let mut session = Box::pin(agent.session(http_only));
        let outcome = tokio::select! {
            outcome = &mut session => Some(outcome),
            _ = &mut shutdown => {
                // A WebSocket session says goodbye over its connection and closes it.
                leaving.send_replace(true);
                let _ = tokio::time::timeout(Duration::from_secs(1), &mut session).await;
                None
            }
        };
        drop(session);
        let Some(outcome) = outcome else {
            agent.leave(http_only).await;
            return Ok(());
        };
        match outcome {
            Ended::Refused(reason) if !http_only => {
                tracing::info!(%reason, "opamp: no websocket upgrade; polling over http instead");
                http_only = true;
                continue;
            }
            Ended::Refused(reason) | Ended::Lost(reason) => {
                if started.elapsed() > Duration::from_secs(10) {
                    backoff = Backoff::default();
                }
                let wait = backoff.next();
                tracing::warn!(endpoint = %agent.options.endpoint, %reason, retry_in = ?wait, "opamp: not connected");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = &mut shutdown => return Ok(()),
                }
            }
        }
    }
}

/// Why a session ended.
enum Ended {
    /// The server answered, but not with OpAMP over this transport.
    Refused(String),
    /// The connection failed or dropped.
    Lost(String),
}

/// Exponential backoff from 500 ms to 30 s, with ±20% jitter.
#[derive(Default)]
struct Backoff(u32);

impl Backoff {
    fn next(&mut self) -> Duration {
        let base = (0.5 * 2f64.powi(self.0 as i32)).min(30.0);
        self.0 = (self.0 + 1).min(10);
        Duration::from_secs_f64(base * rand::random_range(0.8..1.2))
    }
}

struct Agent {
    options: Options,
    state: State,
    applier: Arc<dyn Apply>,
    sequence: u64,
    status: Option<RemoteConfigStatus>,
    /// The health last reported, to send it again only when it changes.
    reported_health: Option<ComponentHealth>,
    /// When health was last sent.
    health_reported: Instant,
    /// Turns true when the agent stops.
    leaving: tokio::sync::watch::Receiver<bool>,
}

impl Agent {
    fn new(
        options: Options,
        applier: Arc<dyn Apply>,
        leaving: tokio::sync::watch::Receiver<bool>,
    ) -> std::io::Result<Agent> {
        let state = State::load(&options.state_dir)?;
        tracing::info!(uid = %hex(&state.uid), "opamp: agent identity");
        Ok(Agent {
            options,
            state,
            applier,
            sequence: 0,
            status: None,
            reported_health: None,
            health_reported: Instant::now(),
            leaving,
        })
    }

    /// Applies the last config that worked, so a restart does not wait for the server.
    async fn restore(&mut self) {
        let Some(config) = self.state.last_config() else {
            return;
        };
        match self.applier.apply(&files(&config)).await {
            Ok(()) => {
                tracing::info!(hash = %hex(&config.config_hash), "opamp: restored the last applied config");
                self.status = Some(status(
                    &config.config_hash,
                    RemoteConfigStatuses::Applied,
                    "",
                ));
            }
            Err(e) => {
                tracing::error!(error = %e, "opamp: the last applied config no longer applies")
            }
        }
    }

    fn message(&mut self) -> AgentToServer {
        let message = AgentToServer {
            instance_uid: self.state.uid.to_vec(),
            sequence_num: self.sequence,
            capabilities: bits(CAPABILITIES),
            ..Default::default()
        };
        self.sequence += 1;
        message
    }

    /// `health`, noted as the health last sent.
    fn reported(&mut self, health: ComponentHealth) -> ComponentHealth {
        self.reported_health = Some(health.clone());
        self.health_reported = Instant::now();
        health
    }

    /// The message that says this agent is leaving.
    fn goodbye(&mut self) -> AgentToServer {
        let mut goodbye = self.message();
        goodbye.agent_disconnect = Some(AgentDisconnect {});
        goodbye
    }

    /// Everything the server may want to know.
    async fn full_state(&mut self) -> AgentToServer {
        let health = self.reported(self.applier.health().await);
        let effective = self.effective_config().await;
        let mut message = self.message();
        message.agent_description = Some(self.options.description(&hex(&self.state.uid)));
        message.health = Some(health);
        message.effective_config = Some(effective);
        message.remote_config_status = self.status.clone();
        message
    }

    /// The health, when a component turned healthy or failing, or failed anew, since it was
    /// last reported: such a change is told at once, not at the next heartbeat.
    async fn health_turned(&mut self) -> Option<AgentToServer> {
        let health = self.applier.health().await;
        let reported = self.reported_health.as_ref();
        let news = reported.map(verdicts) != Some(verdicts(&health));
        // Statuses (a queue's fill) are refreshed now and then, not on every change.
        let refresh = reported != Some(&health) && self.health_reported.elapsed() >= STATUS_REFRESH;
        if !news && !refresh {
            return None;
        }
        let mut message = self.message();
        message.health = Some(self.reported(health));
        Some(message)
    }

    /// A heartbeat, with the health when it changed.
    async fn heartbeat(&mut self) -> AgentToServer {
        let health = self.applier.health().await;
        let mut message = self.message();
        if self.reported_health.as_ref() != Some(&health) {
            message.health = Some(self.reported(health));
        }
        message
    }

    async fn effective_config(&self) -> EffectiveConfig {
        let config_map = self
            .applier
            .effective_config()
            .await
            .into_iter()
            .map(|(name, (body, content_type))| (name, AgentConfigFile { body, content_type }))
            .collect();
        EffectiveConfig {
            config_map: Some(AgentConfigMap { config_map }),
        }
    }

    /// Handles a server message; returns what to send back, and a config to apply.
    async fn on_message(
        &mut self,
        message: ServerToAgent,
    ) -> (Vec<AgentToServer>, Option<AgentRemoteConfig>) {
        let mut replies = Vec::new();
        if let Some(error) = message.error_response {
            tracing::warn!(kind = error.r#type, error = %error.error_message, "opamp: the server reported an error");
            return (replies, None);
        }
        if let Some(identification) = message.agent_identification
            && let Ok(uid) = <[u8; 16]>::try_from(identification.new_instance_uid.as_slice())
        {
            tracing::info!(old = %hex(&self.state.uid), new = %hex(&uid), "opamp: the server assigned a new instance uid");
            if let Err(e) = self.state.set_uid(uid) {
                tracing::error!(error = %e, "opamp: cannot keep the new instance uid");
            }
            replies.push(self.full_state().await);
        } else if message.flags & ServerToAgentFlags::ReportFullState as u64 != 0 {
            replies.push(self.full_state().await);
        }
        let Some(offer) = message.remote_config else {
            return (replies, None);
        };
        let applied = self.status.as_ref().is_some_and(|s| {
            s.last_remote_config_hash == offer.config_hash
                && s.status == RemoteConfigStatuses::Applied as i32
        });
        if !applied {
            return (replies, Some(offer));
        }
        // Offered what already runs (say, restored from disk): the server lacks our status.
        if replies.is_empty() {
            let mut again = self.message();
            again.remote_config_status = self.status.clone();
            replies.push(again);
        }
        (replies, None)
    }

    /// The message announcing that `config` is being applied.
    fn applying(&mut self, config: &AgentRemoteConfig) -> AgentToServer {
        self.status = Some(status(
            &config.config_hash,
            RemoteConfigStatuses::Applying,
            "",
        ));
        let mut message = self.message();
        message.remote_config_status = self.status.clone();
        message
    }

    /// Applies `config` and returns the message reporting the outcome.
    async fn apply(&mut self, config: AgentRemoteConfig) -> AgentToServer {
        let hash = hex(&config.config_hash);
        let result = self.applier.apply(&files(&config)).await;
        let mut message = match result {
            Ok(()) => {
                tracing::info!(%hash, "opamp: remote config applied");
                if let Err(e) = self.state.save_config(&config) {
                    tracing::error!(error = %e, "opamp: cannot keep the applied config on disk");
                }
                self.status = Some(status(
                    &config.config_hash,
                    RemoteConfigStatuses::Applied,
                    "",
                ));
                let mut message = self.message();
                message.effective_config = Some(self.effective_config().await);
                message
            }
            Err(error) => {
                tracing::error!(%hash, %error, "opamp: remote config refused; the previous config keeps running");
                self.status = Some(status(
                    &config.config_hash,
                    RemoteConfigStatuses::Failed,
                    &error,
                ));
                self.message()
            }
        };
        message.remote_config_status = self.status.clone();
        message.health = Some(self.reported(self.applier.health().await));
        message
    }

    async fn session(&mut self, http_only: bool) -> Ended {
        if http_only {
            self.poll().await
        } else {
            self.websocket().await
        }
    }

    async fn websocket(&mut self) -> Ended {
        let url = self
            .options
            .endpoint
            .replacen("http://", "ws://", 1)
            .replacen("https://", "wss://", 1);
        let mut request = match url.as_str().into_client_request() {
            Ok(request) => request,
            Err(e) => return Ended::Lost(format!("invalid endpoint {url}: {e}")),
        };
        if let Some(token) = &self.options.token
            && let Ok(value) = format!("Bearer {token}").parse()
        {
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, value);
        }
        let connector = match url.starts_with("wss://").then(|| self.tls()).transpose() {
            Ok(connector) => connector,
            Err(e) => return Ended::Lost(e),
        };
        let connected =
            tokio_tungstenite::connect_async_tls_with_config(request, None, true, connector).await;
        let mut socket = match connected {
            Ok((socket, _)) => socket,
            Err(tungstenite::Error::Http(response)) => {
                return Ended::Refused(format!("HTTP {} to the upgrade", response.status()));
            }
            Err(e) => return Ended::Lost(e.to_string()),
        };
        tracing::info!(%url, "opamp: connected over websocket");
        let hello = self.full_state().await;
        if let Err(e) = socket.send(Frame::Binary(ws_frame(&hello).into())).await {
            return Ended::Lost(e.to_string());
        }
        let mut heartbeat = tokio::time::interval(self.options.heartbeat);
        heartbeat.tick().await;
        let mut health_check = tokio::time::interval(HEALTH_CHECK);
        health_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leaving = self.leaving.clone();
        loop {
            let outgoing = tokio::select! {
                _ = leaving.changed() => {
                    let goodbye = self.goodbye();
                    let _ = socket.send(Frame::Binary(ws_frame(&goodbye).into())).await;
                    let _ = socket.close(None).await;
                    return Ended::Lost("leaving".into());
                }
                frame = socket.next() => match frame {
                    Some(Ok(Frame::Binary(frame))) => {
                        let message = match ws_payload(&frame).map_err(String::from).and_then(|p| {
                            ServerToAgent::decode(p).map_err(|e| e.to_string())
                        }) {
                            Ok(message) => message,
                            Err(e) => {
                                tracing::warn!(error = %e, "opamp: unreadable message from the server");
                                continue;
                            }
                        };
                        let (mut replies, config) = self.on_message(message).await;
                        if let Some(config) = config {
                            replies.push(self.applying(&config));
                            for reply in replies.drain(..) {
                                if let Err(e) = socket.send(Frame::Binary(ws_frame(&reply).into())).await {
                                    return Ended::Lost(e.to_string());
                                }
                            }
                            replies.push(self.apply(config).await);
                        }
                        replies
                    }
                    Some(Ok(Frame::Close(frame))) => {
                        return Ended::Lost(format!("closed by the server: {frame:?}"));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Ended::Lost(e.to_string()),
                    None => return Ended::Lost("connection closed".into()),
                },
                _ = heartbeat.tick() => vec![self.heartbeat().await],
                _ = health_check.tick() => match self.health_turned().await {
                    Some(message) => vec![message],
                    None => continue,
                },
            };
            for message in outgoing {
                if let Err(e) = socket.send(Frame::Binary(ws_frame(&message).into())).await {
                    return Ended::Lost(e.to_string());
                }
            }
        }
    }

    /// The TLS client settings: the CA file when one is given, the public roots otherwise.
    fn tls(&self) -> Result<tokio_tungstenite::Connector, String> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        match &self.options.ca_file {
            Some(file) => {
                let certs = CertificateDer::pem_file_iter(file)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| format!("{}: {e}", file.display()))?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(format!("{}: no usable CA certificate", file.display()));
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(tokio_tungstenite::Connector::Rustls(Arc::new(config)))
    }

    /// Plain HTTP: post, act on the answer, and poll at the heartbeat interval.
    async fn poll(&mut self) -> Ended {
        let url = self
            .options
            .endpoint
            .replacen("ws://", "http://", 1)
            .replacen("wss://", "https://", 1);
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let mut pending = vec![self.full_state().await];
        loop {
            let Some(message) = pending.pop() else {
                tokio::time::sleep(self.options.heartbeat).await;
                pending.push(self.heartbeat().await);
                continue;
            };
            let answer = match self.post(&client, &url, &message).await {
                Ok(answer) => answer,
                Err(ended) => return ended,
            };
            let (replies, config) = self.on_message(answer).await;
            // Replies go out first (in order), then the outcome of applying.
            let mut next: Vec<AgentToServer> = replies;
            if let Some(config) = config {
                next.push(self.applying(&config));
                next.push(self.apply(config).await);
            }
            next.reverse();
            pending.extend(next);
        }
    }

    async fn post(
        &self,
        client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
        url: &str,
        message: &AgentToServer,
    ) -> Result<ServerToAgent, Ended> {
        let mut request =
            http::Request::post(url).header(http::header::CONTENT_TYPE, "application/x-protobuf");
        if let Some(token) = &self.options.token {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(Bytes::from(message.encode_to_vec())))
            .map_err(|e| Ended::Lost(e.to_string()))?;
        let response = client
            .request(request)
            .await
            .map_err(|e| Ended::Lost(e.to_string()))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| Ended::Lost(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(Ended::Lost(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        ServerToAgent::decode(body).map_err(|e| Ended::Lost(format!("unreadable answer: {e}")))
    }

    /// Tells the server this agent is leaving, over HTTP (a WebSocket session has said so
    /// itself).
    async fn leave(&mut self, http_only: bool) {
        if http_only {
            let goodbye = self.goodbye();
            let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                self.post(&client, &self.options.endpoint, &goodbye),
            )
            .await;
        }
        tracing::info!("opamp: supervisor stopped");
    }
}

fn status(hash: &[u8], status: RemoteConfigStatuses, error: &str) -> RemoteConfigStatus {
    RemoteConfigStatus {
        last_remote_config_hash: hash.to_vec(),
        status: status as i32,
        error_message: error.to_string(),
    }
}

fn files(config: &AgentRemoteConfig) -> Files {
    config
        .config
        .as_ref()
        .map(|map| {
            map.config_map
                .iter()
                .map(|(name, file)| (name.clone(), (file.body.clone(), file.content_type.clone())))
                .collect()
        })
        .unwrap_or_default()
}

/// How often health is looked at between heartbeats (over WebSocket).
const HEALTH_CHECK: Duration = Duration::from_secs(1);
/// How often a changed status with no change of health is sent (over WebSocket).
const STATUS_REFRESH: Duration = Duration::from_secs(5);

/// What makes a health report news: whether the agent and each component work, and their
/// errors (a status such as a queue's fill changes all the time and waits for the heartbeat).
fn verdicts(health: &ComponentHealth) -> (bool, &str, Vec<(&str, bool, &str)>) {
    let mut components: Vec<(&str, bool, &str)> = health
        .component_health_map
        .iter()
        .map(|(name, c)| (name.as_str(), c.healthy, c.last_error.as_str()))
        .collect();
    components.sort_unstable();
    (health.healthy, health.last_error.as_str(), components)
}
