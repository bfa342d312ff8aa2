//! What the server knows of each agent, and the configs it should run.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use odigos_proto::opamp::*;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};

/// An agent's `instance_uid`.
pub type Uid = [u8; 16];

const SERVER_CAPABILITIES: &[ServerCapabilities] = &[
    ServerCapabilities::AcceptsStatus,
    ServerCapabilities::OffersRemoteConfig,
    ServerCapabilities::AcceptsEffectiveConfig,
];

/// Which agents a config is for. A more specific selector wins: an agent's own uid, then an
/// attribute of its description (the latest such assignment), then everyone.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Selector {
    All,
    /// Agents whose description has this attribute (e.g. `odigos.role` = `gateway`).
    Attribute {
        key: String,
        value: String,
    },
    Agent(Uid),
}

/// A config offered to agents, encoded once for all of them.
struct Offer {
    hash: Vec<u8>,
    /// The encoded `AgentRemoteConfig`.
    encoded: Bytes,
}

/// Where a WebSocket agent's pushes go.
#[derive(Clone)]
pub(crate) struct Connection {
    pub id: u64,
    pub push: mpsc::Sender<Bytes>,
}

pub(crate) enum Transport {
    Http,
    WebSocket(Connection),
}

#[derive(Default)]
struct Agent {
    description: Option<AgentDescription>,
    capabilities: u64,
    health: Option<ComponentHealth>,
    effective_config: Option<EffectiveConfig>,
    remote_config_status: Option<RemoteConfigStatus>,
    sequence_num: Option<u64>,
    last_seen: Option<Instant>,
    connection: Option<Connection>,
    transport: &'static str,
}

/// How an agent stands with the config meant for it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum ConfigStatus {
    /// No config is assigned to it.
    Unassigned,
    /// Offered; the agent has not reported on it yet.
    Pending {
        hash: String,
    },
    Applying {
        hash: String,
    },
    Applied {
        hash: String,
    },
    Failed {
        hash: String,
        error: String,
    },
}

/// What a user sees of one agent.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AgentView {
    pub uid: String,
    pub identifying: BTreeMap<String, String>,
    pub non_identifying: BTreeMap<String, String>,
    pub capabilities: u64,
    pub healthy: Option<bool>,
    pub last_error: Option<String>,
    /// Component health, flattened to `path` (`exporters.otlp/backend`).
    pub components: BTreeMap<String, ComponentView>,
    /// Effective config files by name, as text.
    pub effective_config: BTreeMap<String, String>,
    pub config: ConfigStatus,
    /// `websocket` or `http`, while the agent is live.
    pub connected: Option<&'static str>,
    /// When it last sent a message, as an RFC 3339 UTC timestamp.
    pub last_seen: Option<String>,
}

/// How one component of an agent works, as it reports.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ComponentView {
    pub healthy: bool,
    /// What it says of itself: a receiver where it listens, an exporter its queue.
    pub status: String,
    /// The latest error, kept after recovery for context.
    pub last_error: String,
    /// Since when it has been as it is (RFC 3339).
    pub since: Option<String>,
}

/// The server's view of the fleet.
pub struct Fleet {
    agents: Mutex<HashMap<Uid, Agent>>,
    assignments: Mutex<Vec<(Selector, std::sync::Arc<Offer>)>>,
    timeout: Duration,
    next_connection: AtomicU64,
    closing: watch::Sender<bool>,
    /// Counts config status reports, so watchers can wait for agents to apply a config.
    reports: watch::Sender<u64>,
}

impl Fleet {
    pub fn new(timeout: Duration) -> Fleet {
        Fleet {
            agents: Mutex::default(),
            assignments: Mutex::default(),
            timeout,
            next_connection: AtomicU64::new(1),
            closing: watch::channel(false).0,
            reports: watch::channel(0).0,
        }
    }

    pub(crate) fn connection_id(&self) -> u64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }

    /// Resolves when the server shuts down.
    pub(crate) fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    pub(crate) fn close_all(&self) {
        self.closing.send_replace(true);
    }

    /// Assigns a config (files by name: body and content type) to the agents `selector`
    /// picks, pushes it to those connected over WebSocket, and returns its hash (hex).
    pub fn set_config(
        &self,
        selector: Selector,
        files: BTreeMap<String, (Vec<u8>, String)>,
    ) -> String {
        let mut hasher = Sha256::new();
        for (name, (body, content_type)) in &files {
            for part in [name.as_bytes(), content_type.as_bytes(), body] {
                hasher.update((part.len() as u64).to_le_bytes());
                hasher.update(part);
            }
        }
        let hash = hasher.finalize().to_vec();
        let config_map = files
            .into_iter()
            .map(|(name, (body, content_type))| (name, AgentConfigFile { body, content_type }))
            .collect();
        let remote = AgentRemoteConfig {
            config: Some(AgentConfigMap { config_map }),
            config_hash: hash.clone(),
        };
        let offer = std::sync::Arc::new(Offer {
            hash: hash.clone(),
            encoded: remote.encode_to_vec().into(),
        });
        {
            let mut assignments = self.assignments.lock().unwrap();
            assignments.retain(|(s, _)| *s != selector);
            assignments.push((selector, offer));
        }
        self.push_offers();
        hex(&hash)
    }

    /// Withdraws the config assigned to `selector`; agents keep running what they have.
    pub fn unset_config(&self, selector: &Selector) {
        self.assignments
            .lock()
            .unwrap()
            .retain(|(s, _)| s != selector);
    }

    /// Changes each time an agent reports on its config (applying, applied or failed).
    pub fn reports(&self) -> watch::Receiver<u64> {
        self.reports.subscribe()
    }

    /// Sends every connected agent whose config differs from what it reported its offer.
    fn push_offers(&self) {
        let assignments = self.assignments.lock().unwrap().clone();
        let mut pushes = Vec::new();
        {
            let agents = self.agents.lock().unwrap();
            for (uid, agent) in agents.iter() {
                let Some(connection) = &agent.connection else {
                    continue;
                };
                if let Some(offer) = offer_for(&assignments, uid, agent)
                    && needs(agent, &offer)
                {
                    let head = ServerToAgent {
                        instance_uid: uid.to_vec(),
                        ..Default::default()
                    };
                    pushes.push((connection.push.clone(), with_offer(&head, Some(&offer))));
                }
            }
        }
        for (push, message) in pushes {
            // A full buffer means the agent is behind; it gets the offer on its next message.
            let _ = push.try_send(message);
        }
    }

    /// Handles one message from an agent and returns the encoded answer.
    pub(crate) fn handle(&self, message: AgentToServer, transport: Transport) -> Bytes {
        let Ok(uid) = Uid::try_from(message.instance_uid.as_slice()) else {
            let error = format!(
                "instance_uid must be 16 bytes, got {}",
                message.instance_uid.len()
            );
            return error_response(
                &message.instance_uid,
                ServerErrorResponseType::BadRequest,
                error,
                None,
            );
        };
        if message.capabilities & AgentCapabilities::ReportsStatus as u64 == 0 {
            let error = "capabilities must include ReportsStatus (0x1)".to_string();
            return error_response(&uid, ServerErrorResponseType::BadRequest, error, None);
        }
        let assignments = self.assignments.lock().unwrap().clone();
        let mut agents = self.agents.lock().unwrap();

        // Two live agents claiming one uid: the newcomer gets a uid of its own.
        if let Transport::WebSocket(connection) = &transport
            && let Some(existing) = agents.get(&uid)
            && existing
                .connection
                .as_ref()
                .is_some_and(|c| c.id != connection.id)
        {
            let fresh = new_uid();
            tracing::warn!(uid = %hex(&uid), new = %hex(&fresh), "two agents share an instance_uid; offering a new one");
            let head = ServerToAgent {
                instance_uid: uid.to_vec(),
                capabilities: server_bits(SERVER_CAPABILITIES),
                agent_identification: Some(AgentIdentification {
                    new_instance_uid: fresh.to_vec(),
                }),
                ..Default::default()
            };
            return head.encode_to_vec().into();
        }

        let known = agents.contains_key(&uid);
        let agent = agents.entry(uid).or_default();
        let mut flags = 0;
        // The server lost track of this agent: it is new to us but does not describe itself, or
        // messages went missing.
        let gap = match agent.sequence_num {
            Some(last) => message.sequence_num > last + 1,
            None => false,
        };
        if (!known && message.agent_description.is_none()) || gap {
            flags |= ServerToAgentFlags::ReportFullState as u64;
        }
        if !known {
            tracing::info!(uid = %hex(&uid), "agent connected");
        }
        agent.sequence_num = Some(message.sequence_num);
        agent.last_seen = Some(Instant::now());
        agent.capabilities = message.capabilities;
        if message.agent_description.is_some() {
            agent.description = message.agent_description;
        }
        if let Some(health) = message.health {
            // A component that turns healthy or failing changes statuses.
            if agent.health.as_ref().map(healthy_flags) != Some(healthy_flags(&health)) {
                self.reports.send_modify(|n| *n += 1);
            }
            agent.health = Some(health);
        }
        if message.effective_config.is_some() {
            agent.effective_config = message.effective_config;
        }
        if let Some(status) = message.remote_config_status {
            if status.status == RemoteConfigStatuses::Failed as i32 {
                tracing::warn!(uid = %hex(&uid), error = %status.error_message, "agent could not apply its config");
            }
            agent.remote_config_status = Some(status);
            self.reports.send_modify(|n| *n += 1);
        }
        match transport {
            Transport::Http => agent.transport = "http",
            Transport::WebSocket(connection) => {
                agent.transport = "websocket";
                agent.connection = Some(connection);
            }
        }
        let mut head = ServerToAgent {
            instance_uid: uid.to_vec(),
            capabilities: server_bits(SERVER_CAPABILITIES),
            flags,
            ..Default::default()
        };
        if message.agent_disconnect.is_some() {
            agent.connection = None;
            agent.last_seen = None;
            tracing::info!(uid = %hex(&uid), "agent disconnected");
        }
        let offer = offer_for(&assignments, &uid, agent).filter(|offer| needs(agent, offer));
        if message.flags & AgentToServerFlags::RequestInstanceUid as u64 != 0 {
            let fresh = new_uid();
            head.agent_identification = Some(AgentIdentification {
                new_instance_uid: fresh.to_vec(),
            });
            if let Some(agent) = agents.remove(&uid) {
                agents.insert(fresh, agent);
            }
        }
        with_offer(&head, offer.as_deref())
    }

    /// Forgets the connection of an agent whose WebSocket closed.
    pub(crate) fn disconnected(&self, uid: &Uid, connection: u64) {
        let mut agents = self.agents.lock().unwrap();
        if let Some(agent) = agents.get_mut(uid)
            && agent
                .connection
                .as_ref()
                .is_some_and(|c| c.id == connection)
        {
            agent.connection = None;
        }
    }

    /// Marks agents not heard from within the timeout as gone; forgets them after ten times it.
    pub fn sweep(&self) {
        let mut agents = self.agents.lock().unwrap();
        agents.retain(|uid, agent| {
            let silent = agent.last_seen.map_or(Duration::MAX, |t| t.elapsed());
            if silent > self.timeout && agent.connection.take().is_some() {
                tracing::info!(uid = %hex(uid), ?silent, "agent timed out");
            }
            silent <= self.timeout * 10
        });
    }

    /// Every agent the server knows, live or recently gone.
    pub fn agents(&self) -> Vec<AgentView> {
        let assignments = self.assignments.lock().unwrap().clone();
        let agents = self.agents.lock().unwrap();
        let mut views: Vec<AgentView> = agents
            .iter()
            .map(|(uid, agent)| view(uid, agent, &assignments, self.timeout))
            .collect();
        views.sort_by(|a, b| a.uid.cmp(&b.uid));
        views
    }

    /// The config files meant for an agent (uid in hex), by name, as text.
    pub fn desired_config(&self, uid: &str) -> Option<BTreeMap<String, String>> {
        let assignments = self.assignments.lock().unwrap().clone();
        let agents = self.agents.lock().unwrap();
        let (uid, agent) = agents.iter().find(|(u, _)| hex(u.as_slice()) == uid)?;
        let offer = offer_for(&assignments, uid, agent)?;
        let remote = AgentRemoteConfig::decode(offer.encoded.clone()).ok()?;
        let files = remote.config?.config_map;
        Some(
            files
                .into_iter()
                .map(|(name, file)| (name, String::from_utf8_lossy(&file.body).into_owned()))
                .collect(),
        )
    }

    /// One agent, by uid in hex.
    pub fn agent(&self, uid: &str) -> Option<AgentView> {
        self.agents().into_iter().find(|a| a.uid == uid)
    }
}

fn offer_for(
    assignments: &[(Selector, std::sync::Arc<Offer>)],
    uid: &Uid,
    agent: &Agent,
) -> Option<std::sync::Arc<Offer>> {
    let has = |key: &str, value: &str| {
        agent.description.as_ref().is_some_and(|d| {
            d.identifying_attributes
                .iter()
                .chain(&d.non_identifying_attributes)
                .any(|kv| kv.key == key && text(kv.value.as_ref()) == value)
        })
    };
    let pick = |wanted: &dyn Fn(&Selector) -> bool| {
        assignments
            .iter()
            .rev()
            .find(|(s, _)| wanted(s))
            .map(|(_, offer)| offer.clone())
    };
    pick(&|s| *s == Selector::Agent(*uid))
        .or_else(|| pick(&|s| matches!(s, Selector::Attribute { key, value } if has(key, value))))
        .or_else(|| pick(&|s| *s == Selector::All))
}

/// Whether the agent takes remote config and has not reported on this one.
fn needs(agent: &Agent, offer: &Offer) -> bool {
    agent.capabilities & AgentCapabilities::AcceptsRemoteConfig as u64 != 0
        && agent
            .remote_config_status
            .as_ref()
            .is_none_or(|s| s.last_remote_config_hash != offer.hash)
}

/// Encodes `head` with the shared, already encoded offer appended as field 3 (`remote_config`):
/// protobuf fields may come in any order, so the offer is encoded once for every recipient.
fn with_offer(head: &ServerToAgent, offer: Option<&Offer>) -> Bytes {
    let mut buf = head.encode_to_vec();
    if let Some(offer) = offer {
        buf.reserve(offer.encoded.len() + 6);
        encode_key(3, WireType::LengthDelimited, &mut buf);
        encode_varint(offer.encoded.len() as u64, &mut buf);
        buf.extend_from_slice(&offer.encoded);
    }
    buf.into()
}

pub(crate) fn error_response(
    uid: &[u8],
    kind: ServerErrorResponseType,
    message: String,
    retry_after: Option<Duration>,
) -> Bytes {
    let response = ServerToAgent {
        instance_uid: uid.to_vec(),
        error_response: Some(ServerErrorResponse {
            r#type: kind as i32,
            error_message: message,
            details: retry_after.map(|d| {
                server_error_response::Details::RetryInfo(RetryInfo {
                    retry_after_nanoseconds: d.as_nanos() as u64,
                })
            }),
        }),
        ..Default::default()
    };
    response.encode_to_vec().into()
}

pub(crate) use odigos_proto::opamp::{hex, new_instance_uid as new_uid};

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn view(
    uid: &Uid,
    agent: &Agent,
    assignments: &[(Selector, std::sync::Arc<Offer>)],
    timeout: Duration,
) -> AgentView {
    let attributes = |list: &[KeyValue]| {
        list.iter()
            .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
            .collect()
    };
    let (identifying, non_identifying) =
        agent
            .description
            .as_ref()
            .map_or_else(Default::default, |d| {
                (
                    attributes(&d.identifying_attributes),
                    attributes(&d.non_identifying_attributes),
                )
            });
    let mut components = BTreeMap::new();
    fn flatten(prefix: &str, health: &ComponentHealth, out: &mut BTreeMap<String, ComponentView>) {
        for (name, child) in &health.component_health_map {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            let view = ComponentView {
                healthy: child.healthy,
                status: child.status.clone(),
                last_error: child.last_error.clone(),
                since: timestamp(child.status_time_unix_nano),
            };
            out.insert(path.clone(), view);
            flatten(&path, child, out);
        }
    }
    if let Some(health) = &agent.health {
        flatten("", health, &mut components);
    }
    let effective_config = agent
        .effective_config
        .as_ref()
        .and_then(|e| e.config_map.as_ref())
        .map(|m| {
            m.config_map
                .iter()
                .map(|(k, f)| (k.clone(), String::from_utf8_lossy(&f.body).into_owned()))
                .collect()
        })
        .unwrap_or_default();
    let config = match offer_for(assignments, uid, agent) {
        None => ConfigStatus::Unassigned,
        Some(offer) => {
            let hash = hex(&offer.hash);
            match &agent.remote_config_status {
                Some(s) if s.last_remote_config_hash == offer.hash => {
                    match RemoteConfigStatuses::try_from(s.status) {
                        Ok(RemoteConfigStatuses::Applied) => ConfigStatus::Applied { hash },
                        Ok(RemoteConfigStatuses::Failed) => ConfigStatus::Failed {
                            hash,
                            error: s.error_message.clone(),
                        },
                        Ok(RemoteConfigStatuses::Applying) => ConfigStatus::Applying { hash },
                        _ => ConfigStatus::Pending { hash },
                    }
                }
                _ => ConfigStatus::Pending { hash },
            }
        }
    };
    let ago = agent.last_seen.map(|t| t.elapsed());
    let live = match agent.transport {
        "websocket" => agent.connection.is_some(),
        _ => ago.is_some_and(|ago| ago <= timeout),
    };
    let last_seen = ago
        .and_then(|ago| std::time::SystemTime::now().checked_sub(ago))
        .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|since_epoch| timestamp(since_epoch.as_nanos() as u64));
    AgentView {
        uid: hex(uid),
        identifying,
        non_identifying,
        capabilities: agent.capabilities,
        healthy: agent.health.as_ref().map(|h| h.healthy),
        last_error: agent
            .health
            .as_ref()
            .map(|h| h.last_error.clone())
            .filter(|e| !e.is_empty()),
        components,
        effective_config,
        config,
        connected: live.then_some(agent.transport),
        last_seen,
    }
}

/// Unix nanoseconds as RFC 3339 (UTC, whole seconds); `None` for 0, which OpAMP uses for unset.
fn timestamp(unix_nanos: u64) -> Option<String> {
    let seconds = i64::try_from(unix_nanos / 1_000_000_000).ok()?;
    (seconds > 0)
        .then(|| k8s_openapi::jiff::Timestamp::from_second(seconds).ok())
        .flatten()
        .map(|t| t.to_string())
}

/// Whether an agent and each of its components is healthy.
fn healthy_flags(health: &ComponentHealth) -> (bool, Vec<(&str, bool)>) {
    let mut components: Vec<(&str, bool)> = health
        .component_health_map
        .iter()
        .map(|(name, c)| (name.as_str(), c.healthy))
        .collect();
    components.sort_unstable();
    (health.healthy, components)
}
