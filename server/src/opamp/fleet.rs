//! What the server knows of each agent, and the configs it should run.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

impl Offer {
    fn of(files: Files) -> Arc<Offer> {
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
        Arc::new(Offer {
            hash,
            encoded: remote.encode_to_vec().into(),
        })
    }
}

/// Configs by selector, looked up by what an agent is: its uid, then its attributes (the
/// latest assignment among those it has), then everyone. A lookup costs a hash probe per
/// attribute of the agent, whatever the number of assignments.
#[derive(Clone, Default)]
struct Table {
    all: Option<Arc<Offer>>,
    by_uid: HashMap<Uid, Arc<Offer>>,
    /// With the sequence number of its assignment: the latest wins.
    by_attribute: HashMap<(String, String), (u64, Arc<Offer>)>,
    next: u64,
}

impl Table {
    fn put(&mut self, selector: Selector, offer: Arc<Offer>) {
        match selector {
            Selector::All => self.all = Some(offer),
            Selector::Agent(uid) => {
                self.by_uid.insert(uid, offer);
            }
            Selector::Attribute { key, value } => {
                self.next += 1;
                self.by_attribute.insert((key, value), (self.next, offer));
            }
        }
    }

    fn remove(&mut self, selector: &Selector) {
        match selector {
            Selector::All => self.all = None,
            Selector::Agent(uid) => {
                self.by_uid.remove(uid);
            }
            Selector::Attribute { key, value } => {
                self.by_attribute.remove(&(key.clone(), value.clone()));
            }
        }
    }

    fn offer_for(&self, uid: &Uid, agent: &Agent) -> Option<Arc<Offer>> {
        if let Some(offer) = self.by_uid.get(uid) {
            return Some(offer.clone());
        }
        let by_attribute = agent.description.as_ref().and_then(|d| {
            d.identifying_attributes
                .iter()
                .chain(&d.non_identifying_attributes)
                .filter_map(|kv| {
                    let key = (kv.key.clone(), text(kv.value.as_ref()));
                    self.by_attribute.get(&key)
                })
                .max_by_key(|(sequence, _)| *sequence)
                .map(|(_, offer)| offer.clone())
        });
        by_attribute.or_else(|| self.all.clone())
    }
}

/// Who should run what: configs assigned by hand through the API, which win, and those the
/// control plane assigns, each in a place of its own so that neither overwrites the other.
#[derive(Clone, Default)]
struct Assignments {
    manual: Table,
    plane: Table,
}

impl Assignments {
    fn offer_for(&self, uid: &Uid, agent: &Agent) -> Option<Arc<Offer>> {
        self.manual
            .offer_for(uid, agent)
            .or_else(|| self.plane.offer_for(uid, agent))
    }
}

/// Files by name: body and content type.
pub type Files = BTreeMap<String, (Vec<u8>, String)>;

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
    /// Its effective config files, as text, decoded once when reported.
    effective_config: Arc<BTreeMap<String, String>>,
    /// What it reported of its configs, oldest first, the last [`HISTORY`] changes.
    history: Arc<Vec<ConfigEvent>>,
    remote_config_status: Option<RemoteConfigStatus>,
    sequence_num: Option<u64>,
    last_seen: Option<Instant>,
    connection: Option<Connection>,
    transport: &'static str,
}

/// Config status changes kept per agent.
const HISTORY: usize = 16;

/// One change in what an agent reported of its config.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ConfigEvent {
    /// When it was reported (RFC 3339).
    pub at: String,
    pub hash: String,
    /// `applying`, `applied` or `failed`.
    pub status: &'static str,
    pub error: Option<String>,
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
    pub effective_config: Arc<BTreeMap<String, String>>,
    pub config: ConfigStatus,
    /// `websocket` or `http`, while the agent is live.
    pub connected: Option<&'static str>,
    /// When it last sent a message, as an RFC 3339 UTC timestamp.
    pub last_seen: Option<String>,
    /// What it reported of its configs, oldest first (the last 16 changes).
    pub history: Arc<Vec<ConfigEvent>>,
}

/// An agent as lists count and filter it.
#[derive(Clone, Debug)]
pub struct AgentBrief {
    pub uid: Uid,
    /// The description attributes asked for, in order (non-identifying ones first).
    pub attributes: Vec<Option<String>>,
    pub config: ConfigStatus,
    pub connected: bool,
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
    /// Replaced whole on every change, so a message reads it without holding a lock.
    assignments: Mutex<Arc<Assignments>>,
    timeout: Duration,
    next_connection: AtomicU64,
    closing: watch::Sender<bool>,
    /// Counts changes that users see: an agent arriving or leaving, reporting on its config,
    /// or a component turning healthy or failing. Heartbeats do not count.
    changes: watch::Sender<u64>,
}

impl Fleet {
    pub fn new(timeout: Duration) -> Fleet {
        Fleet {
            agents: Mutex::default(),
            assignments: Mutex::default(),
            timeout,
            next_connection: AtomicU64::new(1),
            closing: watch::channel(false).0,
            changes: watch::channel(0).0,
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

    /// Assigns a config by hand (the API) to the agents `selector` picks, over what the control
    /// plane assigns them; pushes it to those connected over WebSocket, and returns its hash.
    pub fn set_config(&self, selector: Selector, files: Files) -> String {
        let offer = Offer::of(files);
        let hash = hex(&offer.hash);
        self.change_assignments(|a| a.manual.put(selector, offer));
        hash
    }

    /// Withdraws the config assigned by hand to `selector`; what the control plane assigns
    /// applies again.
    pub fn unset_config(&self, selector: &Selector) {
        self.change_assignments(|a| a.manual.remove(selector));
    }

    /// The control plane's configs, replacing all it assigned before, in one pass over the
    /// fleet; returns their hashes, in order.
    pub fn assign(&self, configs: Vec<(Selector, Files)>) -> Vec<String> {
        let mut table = Table::default();
        let mut hashes = Vec::with_capacity(configs.len());
        for (selector, files) in configs {
            let offer = Offer::of(files);
            hashes.push(hex(&offer.hash));
            table.put(selector, offer);
        }
        self.change_assignments(|a| a.plane = table);
        hashes
    }

    fn change_assignments(&self, change: impl FnOnce(&mut Assignments)) {
        {
            let mut assignments = self.assignments.lock().unwrap();
            change(Arc::make_mut(&mut assignments));
        }
        self.push_offers();
        self.changed();
    }

    fn assignments(&self) -> Arc<Assignments> {
        self.assignments.lock().unwrap().clone()
    }

    /// Moves each time something users see changes: an agent connects or goes, reports on
    /// its config, or a component turns healthy or failing; or the assignments change.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Sends every connected agent whose config differs from what it reported its offer.
    fn push_offers(&self) {
        let assignments = self.assignments();
        let mut pushes = Vec::new();
        {
            let agents = self.agents.lock().unwrap();
            for (uid, agent) in agents.iter() {
                let Some(connection) = &agent.connection else {
                    continue;
                };
                if let Some(offer) = assignments.offer_for(uid, agent)
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

    /// Why an SDK agent's message that odiglet relays (its pods need no token) is refused, if
    /// it is: it speaks for an agent of another role, by its description or its uid, which
    /// would get that agent's configs (a gateway's hold secrets).
    pub(crate) fn refused_for_sdk(&self, message: &AgentToServer) -> Option<String> {
        let role = |description: &AgentDescription| {
            description
                .non_identifying_attributes
                .iter()
                .chain(&description.identifying_attributes)
                .find(|kv| kv.key == crate::reconciler::ROLE)
                .map(|kv| text(kv.value.as_ref()))
        };
        let claimed = message.agent_description.as_ref().and_then(role);
        let known = Uid::try_from(message.instance_uid.as_slice())
            .ok()
            .and_then(|uid| {
                let agents = self.agents.lock().unwrap();
                agents
                    .get(&uid)
                    .and_then(|a| a.description.as_ref().and_then(role))
            });
        match claimed.or(known) {
            Some(role) if role != "sdk" => Some(format!(
                "this relay serves SDK agents only, and this message is for a {role} agent"
            )),
            _ => None,
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
        let assignments = self.assignments();
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
        // Arriving, or coming back after it was taken for gone.
        let arrived = agent.last_seen.is_none_or(|t| t.elapsed() > self.timeout);
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
                self.changed();
            }
            agent.health = Some(health);
        }
        if let Some(effective) = message.effective_config {
            let files = effective
                .config_map
                .map(|m| m.config_map)
                .unwrap_or_default();
            agent.effective_config = Arc::new(
                files
                    .into_iter()
                    .map(|(name, f)| (name, String::from_utf8_lossy(&f.body).into_owned()))
                    .collect(),
            );
        }
        if let Some(status) = message.remote_config_status {
            if status.status == RemoteConfigStatuses::Failed as i32 {
                tracing::warn!(uid = %hex(&uid), error = %status.error_message, "agent could not apply its config");
            }
            let event = ConfigEvent {
                at: timestamp(unix_now()).unwrap_or_default(),
                hash: hex(&status.last_remote_config_hash),
                status: match RemoteConfigStatuses::try_from(status.status) {
                    Ok(RemoteConfigStatuses::Applied) => "applied",
                    Ok(RemoteConfigStatuses::Failed) => "failed",
                    _ => "applying",
                },
                error: Some(status.error_message.clone()).filter(|e| !e.is_empty()),
            };
            let last = agent.history.last();
            if last.is_none_or(|l| {
                (&l.hash, l.status, &l.error) != (&event.hash, event.status, &event.error)
            }) {
                let history = Arc::make_mut(&mut agent.history);
                if history.len() == HISTORY {
                    history.remove(0);
                }
                history.push(event);
            }
            agent.remote_config_status = Some(status);
            self.changed();
        }
        if arrived {
            self.changed();
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
            self.changed();
        }
        let offer = assignments
            .offer_for(&uid, agent)
            .filter(|offer| needs(agent, offer));
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
            drop(agents);
            self.changed();
        }
    }

    /// Marks agents not heard from within the timeout as gone; forgets them after ten times it.
    pub fn sweep(&self) {
        let mut gone = false;
        self.agents.lock().unwrap().retain(|uid, agent| {
            let silent = agent.last_seen.map_or(Duration::MAX, |t| t.elapsed());
            if silent > self.timeout && agent.connection.take().is_some() {
                tracing::info!(uid = %hex(uid), ?silent, "agent timed out");
                gone = true;
            }
            silent <= self.timeout * 10
        });
        if gone {
            self.changed();
        }
    }

    /// Every agent the server knows, live or recently gone.
    pub fn agents(&self) -> Vec<AgentView> {
        let assignments = self.assignments();
        let agents = self.agents.lock().unwrap();
        let mut views: Vec<AgentView> = agents
            .iter()
            .map(|(uid, agent)| view(uid, agent, &assignments, self.timeout))
            .collect();
        views.sort_by(|a, b| a.uid.cmp(&b.uid));
        views
    }

    /// Where agents serve their own metrics, as they report it (`listening ADDRESS` on their
    /// `service.telemetry.metrics` component): (uid in hex, address).
    pub fn metrics_endpoints(&self) -> Vec<(String, String)> {
        let agents = self.agents.lock().unwrap();
        agents
            .iter()
            .filter_map(|(uid, agent)| {
                let health = agent.health.as_ref()?;
                let status = &health
                    .component_health_map
                    .get("service.telemetry.metrics")?
                    .status;
                let pod_ip = described(agent, POD_IP);
                Some((hex(uid), metrics_address(status, pod_ip.as_deref())?))
            })
            .collect()
    }

    /// What lists of agents count and filter by, for every agent: cheaper than
    /// [`Fleet::agents`], which builds each agent's whole view.
    pub fn briefs(&self, keys: &[&str]) -> Vec<AgentBrief> {
        let assignments = self.assignments();
        let agents = self.agents.lock().unwrap();
        agents
            .iter()
            .map(|(uid, agent)| {
                let attributes = keys.iter().map(|key| described(agent, key)).collect();
                AgentBrief {
                    uid: *uid,
                    attributes,
                    config: config_status(uid, agent, &assignments),
                    connected: is_live(agent, self.timeout),
                }
            })
            .collect()
    }

    /// The config files meant for an agent (uid in hex), by name, as text; secret values,
    /// which travel in a file of their own, are left out.
    pub fn desired_config(&self, uid: &str) -> Option<BTreeMap<String, String>> {
        let uid = odigos_proto::opamp::parse_uid(uid)?;
        let assignments = self.assignments();
        let agents = self.agents.lock().unwrap();
        let offer = assignments.offer_for(&uid, agents.get(&uid)?)?;
        let remote = AgentRemoteConfig::decode(offer.encoded.clone()).ok()?;
        let files = remote.config?.config_map;
        Some(
            files
                .into_iter()
                .filter(|(name, _)| name != odigos_proto::opamp::SECRETS_FILE)
                .map(|(name, file)| (name, String::from_utf8_lossy(&file.body).into_owned()))
                .collect(),
        )
    }

    /// One agent, by uid.
    pub fn view(&self, uid: &Uid) -> Option<AgentView> {
        let assignments = self.assignments();
        let agents = self.agents.lock().unwrap();
        Some(view(uid, agents.get(uid)?, &assignments, self.timeout))
    }

    /// One agent, by uid in hex.
    pub fn agent(&self, uid: &str) -> Option<AgentView> {
        self.view(&odigos_proto::opamp::parse_uid(uid)?)
    }
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

fn view(uid: &Uid, agent: &Agent, assignments: &Assignments, timeout: Duration) -> AgentView {
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
    let effective_config = agent.effective_config.clone();
    let config = config_status(uid, agent, assignments);
    let ago = agent.last_seen.map(|t| t.elapsed());
    let live = is_live(agent, timeout);
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
        history: agent.history.clone(),
    }
}

/// How an agent stands with the config meant for it.
fn config_status(uid: &Uid, agent: &Agent, assignments: &Assignments) -> ConfigStatus {
    let Some(offer) = assignments.offer_for(uid, agent) else {
        return ConfigStatus::Unassigned;
    };
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

/// Whether an agent is connected: over WebSocket, by its connection; over HTTP, by having
/// been heard from within the timeout.
fn is_live(agent: &Agent, timeout: Duration) -> bool {
    match agent.transport {
        "websocket" => agent.connection.is_some(),
        _ => agent.last_seen.is_some_and(|t| t.elapsed() <= timeout),
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
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

/// An attribute of an agent's description (a non-identifying one first), as text.
fn described(agent: &Agent, key: &str) -> Option<String> {
    let description = agent.description.as_ref()?;
    description
        .non_identifying_attributes
        .iter()
        .chain(&description.identifying_attributes)
        .find(|kv| kv.key == key)
        .map(|kv| text(kv.value.as_ref()))
}

/// The attribute a collector in a pod reports its pod's address in.
pub const POD_IP: &str = "k8s.pod.ip";

/// Where a collector's self-metrics are read, from the status of its
/// `service.telemetry.metrics` component (`listening ADDRESS`): an address on every interface
/// is read at its pod's address when it runs in one, else where this server runs.
pub fn metrics_address(status: &str, pod_ip: Option<&str>) -> Option<String> {
    let address = status.strip_prefix("listening ")?;
    let local = address
        .strip_prefix("0.0.0.0:")
        .or_else(|| address.strip_prefix("[::]:"));
    Some(match (local, pod_ip) {
        (Some(port), Some(ip)) if ip.contains(':') => format!("[{ip}]:{port}"),
        (Some(port), Some(ip)) => format!("{ip}:{port}"),
        (Some(port), None) if address.starts_with('[') => format!("[::1]:{port}"),
        (Some(port), None) => format!("127.0.0.1:{port}"),
        (None, _) => address.to_string(),
    })
}
