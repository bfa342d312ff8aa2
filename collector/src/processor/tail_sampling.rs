//! `tail_sampling`: holds the spans of each trace for `decision_wait`, then keeps or drops the
//! whole trace by policies that see all of it (an error anywhere, its duration, attributes of
//! any span or resource). A subset of the contrib collector's processor of the same name.
//!
//! A batch is accepted once its spans are held, not once their traces are delivered: holding
//! senders for `decision_wait` would stall them. Sampled traces leave in requests of their own,
//! retried while the next stage is full. When the pipeline is retired or the collector shuts
//! down, every held trace is decided at once and flushed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use odigos_proto::Signal;
use odigos_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use odigos_proto::otlp::common::v1::{InstrumentationScope, KeyValue, any_value};
use odigos_proto::otlp::resource::v1::Resource;
use odigos_proto::otlp::trace::v1::status::StatusCode;
use odigos_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use regex::Regex;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::batch::{Batch, Decoded};
use crate::config::{ComponentConfig, ComponentId};
use crate::consumer::{ConsumeError, Consumer, Next};
use crate::processor::Live;
use crate::telemetry::{Counter, Gauge, Registry};
use crate::topology::Context;

/// `tail_sampling`: keeps whole traces chosen by policies that see every span of the trace.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TailSamplingConfig {
    /// How long after the first span of a trace arrives the trace is decided, e.g. `5s`. Spans
    /// of a trace arriving after its decision follow that decision.
    #[serde(with = "crate::yaml::duration")]
    pub decision_wait: Duration,
    /// Most traces held at once; when reached, the oldest trace is decided early. Also how many
    /// recent decisions are remembered for spans arriving late.
    pub num_traces: usize,
    /// Most spans held per trace; further spans of the trace are dropped and counted (0: no
    /// limit).
    pub max_spans_per_trace: usize,
    /// New traces expected per second, to size the trace table up front (0: grow as needed).
    pub expected_new_traces_per_sec: usize,
    /// A trace is kept when any of these policies samples it. Changing only the policies (or
    /// `expected_new_traces_per_sec`) takes effect in place, keeping the traces held.
    pub policies: Vec<PolicyConfig>,
}

impl Default for TailSamplingConfig {
    fn default() -> Self {
        TailSamplingConfig {
            decision_wait: Duration::from_secs(10),
            num_traces: 50_000,
            max_spans_per_trace: 10_000,
            expected_new_traces_per_sec: 0,
            policies: Vec::new(),
        }
    }
}

impl TailSamplingConfig {
    /// Whether a processor running `self` can take `new` without being rebuilt.
    pub fn updatable_to(&self, new: &TailSamplingConfig) -> bool {
        // Spelled out so that a new field has to be sorted into one side or the other.
        let TailSamplingConfig {
            decision_wait,
            num_traces,
            max_spans_per_trace,
            expected_new_traces_per_sec: _,
            policies: _,
        } = self;
        (decision_wait, num_traces, max_spans_per_trace)
            == (
                &new.decision_wait,
                &new.num_traces,
                &new.max_spans_per_trace,
            )
    }
}

/// One sampling policy: a `type`, and the block named after the type that configures it.
#[derive(Clone, Debug, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Names the policy in errors and metrics; unique among the policies of a processor.
    pub name: String,
    /// `always_sample`, `status_code`, `latency`, `string_attribute`, `probabilistic` or
    /// `and`.
    #[serde(rename = "type")]
    pub kind: String,
    pub status_code: Option<StatusCodeConfig>,
    pub latency: Option<LatencyConfig>,
    pub string_attribute: Option<StringAttributeConfig>,
    pub probabilistic: Option<ProbabilisticConfig>,
    pub and: Option<AndConfig>,
}

/// `status_code`: samples a trace with at least one span whose status is listed.
#[derive(Clone, Debug, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatusCodeConfig {
    /// Any of `OK`, `ERROR` and `UNSET`.
    pub status_codes: Vec<String>,
}

/// `latency`: samples a trace by its duration, from its earliest span start to its latest span
/// end.
#[derive(Clone, Debug, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LatencyConfig {
    /// Traces lasting at least this many milliseconds are sampled.
    pub threshold_ms: u64,
    /// When not 0, traces must also last less than this many milliseconds.
    pub upper_threshold_ms: u64,
}

/// `string_attribute`: samples a trace in which a span, or the resource of a span, has the
/// string attribute `key` with one of `values`.
#[derive(Clone, Debug, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StringAttributeConfig {
    pub key: String,
    pub values: Vec<String>,
    /// Read `values` as regular expressions, which match anywhere in the attribute value
    /// (anchor them with `^` and `$` to match whole values).
    pub enabled_regex_matching: bool,
    /// Sample the traces that do not match instead. Unlike the contrib collector's, an inverted
    /// match does not overrule other policies: any policy can still sample the trace.
    pub invert_match: bool,
}

/// `probabilistic`: samples a share of traces, decided by a hash of the trace id, so every span
/// of a trace and every collector with the same salt agree.
#[derive(Clone, Debug, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbabilisticConfig {
    /// Percentage of traces sampled, 0 to 100.
    pub sampling_percentage: f64,
    /// Collectors that must agree use the same salt. Empty means the contrib collector's
    /// default, so both make the same decisions.
    pub hash_salt: String,
}

/// `and`: samples a trace when every sub-policy does.
#[derive(Clone, Debug, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AndConfig {
    /// Policies of any type but `and`.
    pub and_sub_policy: Vec<PolicyConfig>,
}

type Problems = Vec<(Vec<String>, String)>;

impl ComponentConfig for TailSamplingConfig {
    fn validate(&self) -> Problems {
        let mut problems = Vec::new();
        let field = |name: &str| vec![name.to_string()];
        if self.decision_wait.is_zero() {
            problems.push((field("decision_wait"), "must be greater than 0".into()));
        }
        if self.num_traces == 0 {
            problems.push((field("num_traces"), "must be greater than 0".into()));
        }
        if self.policies.is_empty() {
            problems.push((field("policies"), "list at least one policy".into()));
        }
        let mut names = HashSet::new();
        for (i, policy) in self.policies.iter().enumerate() {
            let path = vec!["policies".to_string(), i.to_string()];
            if !policy.name.is_empty() && !names.insert(policy.name.as_str()) {
                let at = [path.clone(), field("name")].concat();
                problems.push((at, format!("duplicate policy name {:?}", policy.name)));
            }
            compile(policy, &path, false, &mut problems);
        }
        problems
    }
}

const POLICY_TYPES: &[&str] = &[
    "always_sample",
    "status_code",
    "latency",
    "string_attribute",
    "probabilistic",
    "and",
];

/// The salt the contrib collector uses when none is set.
const DEFAULT_HASH_SALT: &str = "default-hash-seed";

/// A compiled policy decision.
#[derive(Debug)]
enum Rule {
    Always,
    Status(Vec<i32>),
    Latency {
        at_least_ms: u64,
        below_ms: Option<u64>,
    },
    Attribute {
        key: String,
        values: Values,
        invert: bool,
    },
    Probabilistic {
        salt: Vec<u8>,
        threshold: u64,
    },
    And(Vec<Rule>),
}

#[derive(Debug)]
enum Values {
    Exact(HashSet<String>),
    Patterns(Vec<Regex>),
}

/// Checks `policy`, adding every problem found under `path`; the rule when there are none.
fn compile(
    policy: &PolicyConfig,
    path: &[String],
    nested: bool,
    problems: &mut Problems,
) -> Option<Rule> {
    let at = |fields: &[&str]| -> Vec<String> {
        path.iter()
            .cloned()
            .chain(fields.iter().map(|f| f.to_string()))
            .collect()
    };
    let before = problems.len();
    if policy.name.is_empty() {
        problems.push((at(&["name"]), "a policy needs a name".into()));
    }
    let kind = policy.kind.as_str();
    let known = POLICY_TYPES.contains(&kind);
    if kind.is_empty() {
        let message = format!("a policy needs a type ({})", POLICY_TYPES.join(", "));
        problems.push((at(&["type"]), message));
    } else if !known {
        let message = format!(
            "unknown policy type {kind:?} (known: {})",
            POLICY_TYPES.join(", ")
        );
        problems.push((at(&["type"]), message));
    } else if nested && kind == "and" {
        problems.push((at(&["type"]), "and cannot be nested in and".into()));
    }
    // A block for another type usually means a mistyped `type`: say so rather than ignore it.
    let blocks = [
        ("status_code", policy.status_code.is_some()),
        ("latency", policy.latency.is_some()),
        ("string_attribute", policy.string_attribute.is_some()),
        ("probabilistic", policy.probabilistic.is_some()),
        ("and", policy.and.is_some()),
    ];
    for (block, present) in blocks {
        if known && present && block != kind {
            problems.push((
                at(&[block]),
                format!("{block} has no meaning for type {kind}"),
            ));
        }
    }
    let missing = || (at(&[kind]), format!("type {kind} needs a {kind} block"));
    let rule = match kind {
        "always_sample" => Some(Rule::Always),
        "status_code" => match &policy.status_code {
            None => {
                problems.push(missing());
                None
            }
            Some(c) => {
                if c.status_codes.is_empty() {
                    problems.push((
                        at(&["status_code", "status_codes"]),
                        "list at least one of OK, ERROR, UNSET".into(),
                    ));
                }
                let mut codes = Vec::new();
                for (i, code) in c.status_codes.iter().enumerate() {
                    match code.as_str() {
                        "OK" => codes.push(StatusCode::Ok as i32),
                        "ERROR" => codes.push(StatusCode::Error as i32),
                        "UNSET" => codes.push(StatusCode::Unset as i32),
                        other => problems.push((
                            at(&["status_code", "status_codes", &i.to_string()]),
                            format!("unknown status code {other:?} (known: OK, ERROR, UNSET)"),
                        )),
                    }
                }
                Some(Rule::Status(codes))
            }
        },
        "latency" => match &policy.latency {
            None => {
                problems.push(missing());
                None
            }
            Some(c) => {
                if c.upper_threshold_ms != 0 && c.upper_threshold_ms <= c.threshold_ms {
                    problems.push((
                        at(&["latency", "upper_threshold_ms"]),
                        format!(
                            "must be 0 or greater than threshold_ms ({}), got {}",
                            c.threshold_ms, c.upper_threshold_ms
                        ),
                    ));
                }
                Some(Rule::Latency {
                    at_least_ms: c.threshold_ms,
                    below_ms: (c.upper_threshold_ms != 0).then_some(c.upper_threshold_ms),
                })
            }
        },
        "string_attribute" => match &policy.string_attribute {
            None => {
                problems.push(missing());
                None
            }
            Some(c) => {
                if c.key.is_empty() {
                    problems.push((at(&["string_attribute", "key"]), "a key is needed".into()));
                }
                if c.values.is_empty() {
                    problems.push((
                        at(&["string_attribute", "values"]),
                        "list at least one value".into(),
                    ));
                }
                let values = if c.enabled_regex_matching {
                    let mut patterns = Vec::new();
                    for (i, value) in c.values.iter().enumerate() {
                        match Regex::new(value) {
                            Ok(re) => patterns.push(re),
                            Err(e) => problems.push((
                                at(&["string_attribute", "values", &i.to_string()]),
                                format!("invalid regexp {value:?}: {e}"),
                            )),
                        }
                    }
                    Values::Patterns(patterns)
                } else {
                    Values::Exact(c.values.iter().cloned().collect())
                };
                Some(Rule::Attribute {
                    key: c.key.clone(),
                    values,
                    invert: c.invert_match,
                })
            }
        },
        "probabilistic" => match &policy.probabilistic {
            None => {
                problems.push(missing());
                None
            }
            Some(c) => {
                let share = c.sampling_percentage;
                if !(0.0..=100.0).contains(&share) {
                    problems.push((
                        at(&["probabilistic", "sampling_percentage"]),
                        format!("{share} is not between 0 and 100"),
                    ));
                }
                let salt = if c.hash_salt.is_empty() {
                    DEFAULT_HASH_SALT
                } else {
                    &c.hash_salt
                };
                // Saturating: 100% is u64::MAX, which every hash is at most.
                let threshold = (share / 100.0 * u64::MAX as f64) as u64;
                Some(Rule::Probabilistic {
                    salt: salt.as_bytes().to_vec(),
                    threshold,
                })
            }
        },
        "and" => match &policy.and {
            None => {
                problems.push(missing());
                None
            }
            Some(c) => {
                if c.and_sub_policy.is_empty() {
                    problems.push((
                        at(&["and", "and_sub_policy"]),
                        "list at least one sub-policy".into(),
                    ));
                }
                let rules = c
                    .and_sub_policy
                    .iter()
                    .enumerate()
                    .filter_map(|(i, sub)| {
                        let path = at(&["and", "and_sub_policy", &i.to_string()]);
                        compile(sub, &path, true, problems)
                    })
                    .collect();
                Some(Rule::And(rules))
            }
        },
        _ => None,
    };
    if problems.len() == before { rule } else { None }
}

/// FNV-1a, 64 bits, of the salt then the trace id: the contrib collector's hash.
fn hash_trace_id(salt: &[u8], trace_id: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf29ce484222325;
    for byte in salt.iter().chain(trace_id) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x100000001b3);
    }
    hash
}

impl Rule {
    fn samples(&self, id: &TraceId, trace: &Held) -> bool {
        match self {
            Rule::Always => true,
            Rule::Status(codes) => trace.spans().any(|(_, span)| {
                let code = span
                    .status
                    .as_ref()
                    .map_or(StatusCode::Unset as i32, |s| s.code);
                codes.contains(&code)
            }),
            Rule::Latency {
                at_least_ms,
                below_ms,
            } => {
                let (start, end) = trace
                    .spans()
                    .fold((u64::MAX, 0), |(start, end), (_, span)| {
                        (
                            start.min(span.start_time_unix_nano),
                            end.max(span.end_time_unix_nano),
                        )
                    });
                let ms = end.saturating_sub(start) / 1_000_000;
                ms >= *at_least_ms && below_ms.is_none_or(|below| ms < below)
            }
            Rule::Attribute {
                key,
                values,
                invert,
            } => {
                let matches = |attributes: &[KeyValue]| {
                    attributes.iter().any(|kv| {
                        let Some(any_value::Value::StringValue(text)) =
                            kv.value.as_ref().and_then(|v| v.value.as_ref())
                        else {
                            return false;
                        };
                        kv.key == *key
                            && match values {
                                Values::Exact(set) => set.contains(text),
                                Values::Patterns(patterns) => {
                                    patterns.iter().any(|p| p.is_match(text))
                                }
                            }
                    })
                };
                let found = trace.chunks.iter().any(|chunk| {
                    matches(chunk.origin.resource.attributes())
                        || chunk.spans.iter().any(|span| matches(&span.attributes))
                });
                found != *invert
            }
            Rule::Probabilistic { salt, threshold } => hash_trace_id(salt, id) <= *threshold,
            Rule::And(rules) => rules.iter().all(|rule| rule.samples(id, trace)),
        }
    }
}

struct Policy {
    rule: Rule,
    /// Traces this policy voted to sample.
    sampled: Counter,
}

/// The compiled policies of a processor, swapped in place when only they change.
pub struct Policies(Vec<Policy>);

impl Policies {
    /// Compiles validated policies; each counts the traces it samples in `registry`.
    pub fn new(configs: &[PolicyConfig], registry: &Registry, processor: &str) -> Policies {
        let policies = configs
            .iter()
            .map(|config| {
                let rule = compile(config, &[], false, &mut Vec::new()).expect("validated policy");
                let sampled = registry.counter(
                    "otelcol_processor_tail_sampling_policy_sampled_traces",
                    "Traces each policy voted to sample.",
                    &[("processor", processor), ("policy", &config.name)],
                );
                Policy { rule, sampled }
            })
            .collect();
        Policies(policies)
    }

    /// Whether any policy samples the trace. Every policy is asked, so each one's count says
    /// how much it alone would keep.
    fn samples(&self, id: &TraceId, trace: &Held) -> bool {
        let mut keep = false;
        for policy in &self.0 {
            if policy.rule.samples(id, trace) {
                policy.sampled.add(1);
                keep = true;
            }
        }
        keep
    }
}

type TraceId = [u8; 16];

/// The id spans are grouped by. A malformed id (not 16 bytes) is cut or padded, so its spans
/// still travel together.
fn trace_id(bytes: &[u8]) -> TraceId {
    let mut id = [0; 16];
    let n = bytes.len().min(16);
    id[..n].copy_from_slice(&bytes[..n]);
    id
}

/// The resource a group of spans arrived under.
struct ResourceOrigin {
    resource: Option<Resource>,
    schema_url: String,
    /// Its encoding, to join equal resources from different requests on the way out.
    key: Bytes,
}

impl ResourceOrigin {
    fn attributes(&self) -> &[KeyValue] {
        self.resource.as_ref().map_or(&[], |r| &r.attributes)
    }
}

/// The resource and scope a group of spans arrived under.
struct ScopeOrigin {
    resource: Arc<ResourceOrigin>,
    scope: Option<InstrumentationScope>,
    schema_url: String,
    key: Bytes,
}

/// Splits a request into its scopes' spans, each scope knowing its resource.
fn by_origin(request: ExportTraceServiceRequest) -> Vec<(Arc<ScopeOrigin>, Vec<Span>)> {
    let mut groups = Vec::new();
    for mut resource_spans in request.resource_spans {
        let scopes = std::mem::take(&mut resource_spans.scope_spans);
        let resource = Arc::new(ResourceOrigin {
            key: resource_spans.encode_to_vec().into(),
            resource: resource_spans.resource,
            schema_url: resource_spans.schema_url,
        });
        for mut scope_spans in scopes {
            let spans = std::mem::take(&mut scope_spans.spans);
            let origin = ScopeOrigin {
                resource: resource.clone(),
                key: scope_spans.encode_to_vec().into(),
                scope: scope_spans.scope,
                schema_url: scope_spans.schema_url,
            };
            groups.push((Arc::new(origin), spans));
        }
    }
    groups
}

/// Spans of one trace that arrived under the same resource and scope.
struct Chunk {
    origin: Arc<ScopeOrigin>,
    spans: Vec<Span>,
}

/// A trace waiting for its decision.
struct Held {
    arrived: Instant,
    spans: usize,
    chunks: Vec<Chunk>,
}

impl Held {
    fn push(&mut self, origin: &Arc<ScopeOrigin>, span: Span) {
        self.spans += 1;
        match self.chunks.last_mut() {
            Some(chunk) if Arc::ptr_eq(&chunk.origin, origin) => chunk.spans.push(span),
            _ => self.chunks.push(Chunk {
                origin: origin.clone(),
                spans: vec![span],
            }),
        }
    }

    fn spans(&self) -> impl Iterator<Item = (&ScopeOrigin, &Span)> {
        self.chunks
            .iter()
            .flat_map(|chunk| chunk.spans.iter().map(|span| (&*chunk.origin, span)))
    }
}

/// Sampled spans waiting to be sent, grouped by resource and scope.
#[derive(Default)]
struct Outbound {
    request: ExportTraceServiceRequest,
    /// Where each resource sits in `request`, and each of its scopes within it.
    index: HashMap<Bytes, (usize, HashMap<Bytes, usize>)>,
    spans: usize,
    /// Traces sampled since the last send, to bound what waits.
    traces: usize,
}

impl Outbound {
    fn is_empty(&self) -> bool {
        self.spans == 0
    }

    fn push(&mut self, origin: &ScopeOrigin, spans: impl ExactSizeIterator<Item = Span>) {
        self.spans += spans.len();
        let resources = &mut self.request.resource_spans;
        let (r, scopes) = self
            .index
            .entry(origin.resource.key.clone())
            .or_insert_with(|| {
                resources.push(ResourceSpans {
                    resource: origin.resource.resource.clone(),
                    schema_url: origin.resource.schema_url.clone(),
                    scope_spans: Vec::new(),
                });
                (resources.len() - 1, HashMap::new())
            });
        let scope_spans = &mut resources[*r].scope_spans;
        let s = *scopes.entry(origin.key.clone()).or_insert_with(|| {
            scope_spans.push(ScopeSpans {
                scope: origin.scope.clone(),
                schema_url: origin.schema_url.clone(),
                spans: Vec::new(),
            });
            scope_spans.len() - 1
        });
        scope_spans[s].spans.extend(spans);
    }

    fn take(&mut self) -> Option<Batch> {
        if self.is_empty() {
            return None;
        }
        let outbound = std::mem::take(self);
        Some(Batch::trusted(
            Signal::Traces,
            outbound.request.encode_to_vec().into(),
            outbound.spans,
        ))
    }
}

struct Metrics {
    sampled: Counter,
    not_sampled: Counter,
    decided_early: Counter,
    dropped_spans: Counter,
    over_limit: Counter,
    late_spans: Counter,
    refused_spans: Counter,
    held: Gauge,
}

/// What the processor holds, shared by the entry that takes batches and the task that
/// decides and sends.
struct State {
    held: HashMap<TraceId, Held>,
    /// Held traces, oldest first: the order they come due, and the first to go when full.
    order: VecDeque<TraceId>,
    /// Recent decisions, for spans arriving after them.
    decided: HashMap<TraceId, bool>,
    decided_order: VecDeque<TraceId>,
    outbound: Outbound,
    /// The next stage is refusing sampled traces: refuse new data rather than pile it up.
    stalled: bool,
}

struct Shared {
    state: Mutex<State>,
    policies: Live<Policies>,
    decision_wait: Duration,
    num_traces: usize,
    max_spans_per_trace: usize,
    metrics: Metrics,
}

impl Shared {
    /// Holds the spans of `groups`, or refuses them all. Returns whether the deciding task
    /// should look again (a first trace to wait for, or spans to send).
    fn add(&self, groups: Vec<(Arc<ScopeOrigin>, Vec<Span>)>) -> Result<bool, ConsumeError> {
        let now = Instant::now();
        let policies = self.policies.load();
        let mut guard = self.state.lock().unwrap();
        let state = &mut *guard;
        // Sampled traces wait for at most one `num_traces` beside those held.
        if state.stalled || state.outbound.traces >= self.num_traces {
            return Err(ConsumeError::Exhausted(
                "tail_sampling cannot send sampled traces yet, retry later".into(),
            ));
        }
        let (idle, nothing_out) = (state.held.is_empty(), state.outbound.is_empty());
        for (origin, spans) in groups {
            for span in spans {
                let id = trace_id(&span.trace_id);
                if let Some(&sampled) = state.decided.get(&id) {
                    self.metrics.late_spans.add(1);
                    if sampled {
                        state.outbound.push(&origin, std::iter::once(span));
                    } else {
                        self.metrics.dropped_spans.add(1);
                    }
                    continue;
                }
                if !state.held.contains_key(&id) {
                    if state.held.len() >= self.num_traces {
                        self.metrics.decided_early.add(1);
                        self.decide_oldest(state, &policies);
                    }
                    state.order.push_back(id);
                    let trace = Held {
                        arrived: now,
                        spans: 0,
                        chunks: Vec::new(),
                    };
                    state.held.insert(id, trace);
                }
                let trace = state.held.get_mut(&id).expect("held above");
                if self.max_spans_per_trace != 0 && trace.spans >= self.max_spans_per_trace {
                    self.metrics.over_limit.add(1);
                    continue;
                }
                trace.push(&origin, span);
            }
        }
        self.metrics.held.set(state.held.len() as i64);
        Ok((idle && !state.held.is_empty()) || (nothing_out && !state.outbound.is_empty()))
    }

    /// Decides the traces due by `now` (all of them when `all`), and takes what is to be sent.
    fn tick(&self, now: Instant, all: bool) -> Option<Batch> {
        let policies = self.policies.load();
        let mut guard = self.state.lock().unwrap();
        let state = &mut *guard;
        while let Some(id) = state.order.front() {
            if !all && state.held[id].arrived + self.decision_wait > now {
                break;
            }
            self.decide_oldest(state, &policies);
        }
        self.metrics.held.set(state.held.len() as i64);
        state.outbound.take()
    }

    /// When the deciding task has something to do: the first held trace coming due, or now
    /// when spans wait to be sent.
    fn due(&self) -> Option<Instant> {
        let state = self.state.lock().unwrap();
        if !state.outbound.is_empty() {
            return Some(Instant::now());
        }
        let first = state.order.front()?;
        Some(state.held[first].arrived + self.decision_wait)
    }

    fn decide_oldest(&self, state: &mut State, policies: &Policies) {
        let Some(id) = state.order.pop_front() else {
            return;
        };
        let trace = state.held.remove(&id).expect("ordered traces are held");
        let sampled = policies.samples(&id, &trace);
        if sampled {
            self.metrics.sampled.add(1);
            state.outbound.traces += 1;
            for chunk in trace.chunks {
                state.outbound.push(&chunk.origin, chunk.spans.into_iter());
            }
        } else {
            self.metrics.not_sampled.add(1);
            self.metrics.dropped_spans.add(trace.spans);
        }
        state.decided.insert(id, sampled);
        state.decided_order.push_back(id);
        if state.decided_order.len() > self.num_traces
            && let Some(oldest) = state.decided_order.pop_front()
        {
            state.decided.remove(&oldest);
        }
    }
}

/// Decisions are made at most this often, so traces coming due together leave in one request
/// rather than one request each.
const TICK: Duration = Duration::from_millis(100);

/// Waits between attempts to send to a full next stage.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

struct TailSampler {
    shared: Arc<Shared>,
    /// Wakes the deciding task. When the last sender goes (the pipeline is retired or the
    /// collector stops), the task decides every held trace and flushes it.
    wake: mpsc::Sender<()>,
}

#[async_trait]
impl Consumer for TailSampler {
    /// Accepts a batch once its spans are held, not once their traces are delivered: holding
    /// senders for `decision_wait` would stall them. Refuses data, for the sender to retry,
    /// only while sampled traces cannot be sent, so memory stays bounded.
    async fn consume(&self, mut batch: Batch) -> Result<(), ConsumeError> {
        let acks = batch.take_acks();
        let held = match batch.into_decoded() {
            Ok(Decoded::Traces(request)) => self.shared.add(by_origin(request)),
            Ok(_) => Err(ConsumeError::Rejected(
                "tail_sampling takes traces only".into(),
            )),
            Err(e) => Err(e),
        };
        match held {
            Ok(wake) => {
                // The spans are in the processor's hands now.
                acks.accept();
                if wake {
                    // Full means the task is already due to look.
                    let _ = self.wake.try_send(());
                }
                Ok(())
            }
            Err(e) => {
                acks.refuse(&e);
                Err(e)
            }
        }
    }
}

/// The task that decides traces as they come due and sends the sampled ones on.
struct Decider {
    shared: Arc<Shared>,
    next: Next,
    id: String,
}

impl Decider {
    /// Runs until the processor's entry is gone, then decides and flushes what is left.
    async fn run(self, mut wake: mpsc::Receiver<()>) {
        let mut open = true;
        let mut last = Instant::now();
        while open {
            let due = self.shared.due().map(|at| at.max(last + TICK));
            if due.is_none_or(|at| at > Instant::now()) {
                let sleep = async {
                    match due {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    woken = wake.recv() => match woken {
                        Some(()) => continue,
                        None => open = false,
                    },
                    () = sleep => {}
                }
            }
            last = Instant::now();
            if let Some(batch) = self.shared.tick(last, !open) {
                self.send(batch).await;
            }
        }
    }

    /// Sends until the next stage accepts, backing off while it is full. A refusal for good
    /// drops the spans: the next stage has already retried as its config says.
    async fn send(&self, batch: Batch) {
        let items = batch.items();
        let mut wait = RETRY_FIRST;
        loop {
            match self.next.consume(batch.clone()).await {
                Ok(()) => break,
                Err(ConsumeError::Exhausted(message)) => {
                    self.shared.state.lock().unwrap().stalled = true;
                    tracing::warn!(processor = %self.id, spans = items, error = %message, retry_in = ?wait, "sampled traces refused downstream, will retry");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(RETRY_MAX);
                }
                Err(ConsumeError::Rejected(message)) => {
                    self.shared.metrics.refused_spans.add(items);
                    tracing::error!(processor = %self.id, spans = items, error = %message, "dropping sampled traces: refused downstream");
                    break;
                }
            }
        }
        self.shared.state.lock().unwrap().stalled = false;
    }
}

pub(super) fn build(
    config: &TailSamplingConfig,
    policies: Live<Policies>,
    id: &ComponentId,
    next: Next,
    context: &Context,
) -> Next {
    let labels = [("processor", id.as_str())];
    let counter = |name: &str, help: &'static str| {
        let name = format!("otelcol_processor_tail_sampling_{name}");
        context.registry.counter(&name, help, &labels)
    };
    let metrics = Metrics {
        sampled: counter("sampled_traces", "Traces sampled and sent on."),
        not_sampled: counter("not_sampled_traces", "Traces no policy sampled."),
        decided_early: counter(
            "decided_early_traces",
            "Traces decided before decision_wait because num_traces were held.",
        ),
        dropped_spans: counter(
            "dropped_spans",
            "Spans of traces not sampled, including late ones.",
        ),
        over_limit: counter(
            "spans_over_limit",
            "Spans dropped because their trace held max_spans_per_trace spans.",
        ),
        late_spans: counter(
            "late_spans",
            "Spans arriving after their trace was decided, following that decision.",
        ),
        refused_spans: counter(
            "refused_spans",
            "Sampled spans dropped because the next stage refused them for good.",
        ),
        held: context.registry.gauge(
            "otelcol_processor_tail_sampling_held_traces",
            "Traces waiting for their decision.",
            &labels,
        ),
    };
    let expected = config.expected_new_traces_per_sec as f64 * config.decision_wait.as_secs_f64();
    let capacity = (expected as usize).min(config.num_traces);
    let state = State {
        held: HashMap::with_capacity(capacity),
        order: VecDeque::with_capacity(capacity),
        decided: HashMap::with_capacity(capacity),
        decided_order: VecDeque::with_capacity(capacity),
        outbound: Outbound::default(),
        stalled: false,
    };
    let shared = Arc::new(Shared {
        state: Mutex::new(state),
        policies,
        decision_wait: config.decision_wait,
        num_traces: config.num_traces,
        max_spans_per_trace: config.max_spans_per_trace,
        metrics,
    });
    let (wake, woken) = mpsc::channel(1);
    let decider = Decider {
        shared: shared.clone(),
        next,
        id: id.to_string(),
    };
    context.tasks.spawn(decider.run(woken));
    Arc::new(TailSampler { shared, wake })
}

#[cfg(test)]
mod tests;
