//! odiglet's work on one node: find the processes the config's Sources name, trace them with
//! eBPF, assemble their HTTP spans and hand them on as OTLP.
//!
//! A new config is matched against the processes known and turned into updates of the
//! `traced` map; no program is reloaded. Processes are found by an initial `/proc` scan, then
//! by the exec and exit events of the programs (or by polling `/proc` when eBPF is off).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use odigos_proto::odiglet::{OdigletConfig, ProcessSelector, TracedSource, Workload};
use regex::Regex;
use tokio::sync::{mpsc, watch};

use crate::http::{Assembler, HttpSpan};
use crate::otlp::{Clock, EncodedTraces, TraceRequest, Value, sampled};
use crate::pods::{Pod, Pods};
use crate::process::{Process, ProcessKey, scan};
use crate::runtime::{Runtime, detect};
use crate::tracer::{Event, MAX_CAPTURE, Role, Tracer};

/// How long events wait to be read, and finished spans to be sent with others, at most.
const FLUSH: Duration = Duration::from_millis(200);
/// Spans sent at once without waiting for `FLUSH`.
const BATCH: usize = 512;
/// How often `/proc` is scanned when eBPF is off, and the state counted for health.
const POLL: Duration = Duration::from_secs(1);

/// A config checked and ready: its Sources with their selectors compiled.
struct Plan {
    sources: Vec<(TracedSource, Matcher)>,
}

enum Matcher {
    Executable(String),
    Regex(Regex),
    Workload(Workload),
}

impl Plan {
    fn new(config: OdigletConfig) -> Result<Plan, String> {
        let mut sources = Vec::new();
        for (i, source) in config.sources.into_iter().enumerate() {
            let matcher = match &source.select {
                ProcessSelector::Executable(name) => Matcher::Executable(name.clone()),
                ProcessSelector::Workload(workload) => Matcher::Workload(workload.clone()),
                ProcessSelector::Regex(pattern) => {
                    Matcher::Regex(Regex::new(pattern).map_err(|e| {
                        format!("sources[{i}].select.regex ({}): {e}", source.source)
                    })?)
                }
            };
            if !(0.0..=1.0).contains(&source.head_sampling_fraction) {
                return Err(format!(
                    "sources[{i}].headSamplingFraction ({}): {} is not between 0 and 1",
                    source.source, source.head_sampling_fraction
                ));
            }
            sources.push((source, matcher));
        }
        Ok(Plan { sources })
    }

    /// The first Source that takes `process`, which runs in `pod` if any.
    fn source_of(&self, process: &Process, pod: Option<&Pod>) -> Option<usize> {
        self.sources.iter().position(|(_, matcher)| match matcher {
            Matcher::Executable(name) => process.exe_name() == name,
            Matcher::Regex(regex) => {
                regex.is_match(process.exe_name()) || regex.is_match(&process.cmdline.join(" "))
            }
            Matcher::Workload(workload) => pod.is_some_and(|pod| {
                if workload.kind == "Namespace" {
                    pod.namespace == workload.name
                } else {
                    pod.namespace == workload.namespace
                        && pod.workload_kind == workload.kind
                        && pod.workload_name == workload.name
                }
            }),
        })
    }
}

/// What odiglet does now, for its health and status.
#[derive(Clone, Debug)]
pub struct Report {
    /// The attached programs by name and id, or why eBPF is off.
    pub ebpf: Result<Vec<(String, u32)>, String>,
    /// Processes a Source takes, by pid.
    pub processes: BTreeMap<u32, Matched>,
    pub spans_sent: u64,
    /// Spans lost because the exporter's queue was full.
    pub spans_dropped: u64,
    /// Spans left out by head sampling, a dropped route, or because no Source takes their
    /// process any more.
    pub spans_sampled_out: u64,
    /// Entries of the programs' maps, and the connections span assembly follows: each goes
    /// back to its base once connections close.
    pub kernel_connections: usize,
    pub connections: usize,
    /// Events lost to a full ring buffer: the spans they would have made are missing.
    pub events_lost: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Matched {
    pub key: ProcessKey,
    pub source: String,
    pub service_name: String,
    pub executable: String,
    /// The pod and container it runs in, in Kubernetes.
    pub pod: Option<Arc<Pod>>,
    pub container: Option<String>,
    pub runtime: Option<Runtime>,
    /// Whether its syscalls are traced now (false when its Source turned traces off or eBPF
    /// is off).
    pub traced: bool,
}

/// The running agent.
pub struct Odiglet {
    plan: watch::Sender<Arc<Plan>>,
    pods: watch::Sender<Arc<Pods>>,
    report: Arc<Mutex<Report>>,
}

impl Odiglet {
    /// Starts tracing under `proc` (normally `/proc`), sending spans to `out`; the tracing
    /// starts empty until a config is applied.
    pub fn start(proc: PathBuf, host: String, out: mpsc::Sender<EncodedTraces>) -> Odiglet {
        let (plan, plans) = watch::channel(Arc::new(Plan {
            sources: Vec::new(),
        }));
        let (pods, pod_updates) = watch::channel(Arc::new(Pods::new()));
        let report = Arc::new(Mutex::new(Report {
            ebpf: Err("starting".into()),
            processes: BTreeMap::new(),
            spans_sent: 0,
            spans_dropped: 0,
            spans_sampled_out: 0,
            kernel_connections: 0,
            connections: 0,
            events_lost: 0,
        }));
        let worker = Worker {
            proc,
            host,
            out,
            report: report.clone(),
            tracer: None,
            plan: plans.borrow().clone(),
            pods: Arc::new(Pods::new()),
            known: HashMap::new(),
            assembler: Assembler::new(),
            clock: Clock::now(),
        };
        tokio::spawn(worker.run(plans, pod_updates));
        Odiglet { plan, pods, report }
    }

    /// Checks `config` and puts it in force; on error the previous one stays.
    pub fn apply(&self, config: OdigletConfig) -> Result<(), String> {
        let plan = Plan::new(config)?;
        self.plan.send_replace(Arc::new(plan));
        Ok(())
    }

    /// Puts in force what is known of the node's pods: their processes are matched anew.
    pub fn set_pods(&self, pods: Pods) {
        self.pods.send_replace(Arc::new(pods));
    }

    pub fn report(&self) -> Report {
        self.report.lock().expect("report lock").clone()
    }
}

/// The processes `pid` forked (its threads' children).
fn children(proc: &std::path::Path, pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(proc.join(pid.to_string()).join("task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

struct Worker {
    proc: PathBuf,
    host: String,
    out: mpsc::Sender<EncodedTraces>,
    report: Arc<Mutex<Report>>,
    tracer: Option<Tracer>,
    plan: Arc<Plan>,
    pods: Arc<Pods>,
    /// Every process a Source takes, with the Source's index in the plan.
    known: HashMap<u32, (Matched, usize)>,
    assembler: Assembler,
    clock: Clock,
}

impl Worker {
    async fn run(
        mut self,
        mut plans: watch::Receiver<Arc<Plan>>,
        mut pods: watch::Receiver<Arc<Pods>>,
    ) {
        let mut events = match Tracer::load() {
            Ok((tracer, events)) => {
                let ids = tracer.program_ids();
                tracing::info!(programs = ids.len(), "eBPF programs attached");
                self.report().ebpf = Ok(ids);
                self.tracer = Some(tracer);
                Some(events)
            }
            Err(e) => {
                tracing::warn!("eBPF tracing is off: {e}");
                self.report().ebpf = Err(e.to_string());
                None
            }
        };
        self.rescan();
        let mut flush = tokio::time::interval(FLUSH);
        let mut poll = tokio::time::interval(POLL);
        loop {
            tokio::select! {
                ready = async { events.as_mut().expect("guarded").ready().await }, if events.is_some() => {
                    match ready {
                        Ok(()) => events.as_mut().expect("guarded").drain(|event| self.event(event)),
                        Err(e) => {
                            tracing::error!("reading eBPF events: {e}");
                            events = None;
                        }
                    }
                }
                changed = plans.changed() => {
                    if changed.is_err() {
                        return; // The agent was dropped.
                    }
                    self.replan(plans.borrow_and_update().clone());
                }
                Ok(()) = pods.changed() => {
                    self.pods = pods.borrow_and_update().clone();
                    self.rescan();
                }
                _ = flush.tick() => {
                    // The programs wake the reader only once much waits: the rest is read here.
                    if let Some(events) = &mut events {
                        events.drain(|event| self.event(event));
                    }
                    self.flush();
                }
                _ = poll.tick() => {
                    if self.tracer.is_none() {
                        self.rescan();
                    }
                    self.count_state();
                }
            }
        }
    }

    fn report(&self) -> std::sync::MutexGuard<'_, Report> {
        self.report.lock().expect("report lock")
    }

    fn event(&mut self, event: &Event) {
        match event {
            Event::Exec { pid } => self.discover(*pid),
            Event::Fork { pid, parent } => {
                self.inherit(*pid, *parent);
                self.assembler.push(event);
            }
            Event::Exit { pid } => {
                self.assembler.push(event);
                if self.known.contains_key(pid) {
                    // Its last spans (cut ones included) go out with its resource.
                    self.flush();
                    if let Some(tracer) = &mut self.tracer {
                        tracer.forget(*pid);
                    }
                    self.forget(*pid);
                }
            }
            _ => {
                self.assembler.push(event);
                if self.assembler.finished() >= BATCH {
                    self.flush();
                }
            }
        }
    }

    /// Puts `plan` in force.
    fn replan(&mut self, plan: Arc<Plan>) {
        let header_keys = plan.sources.iter().flat_map(|(s, _)| s.header_keys.clone());
        self.assembler.keep_headers(header_keys.collect());
        self.plan = plan;
        self.rescan();
    }

    /// Matches every process anew against the plan.
    fn rescan(&mut self) {
        let processes = scan(&self.proc).unwrap_or_default();
        let alive: std::collections::HashSet<u32> = processes.iter().map(|p| p.key.pid).collect();
        let gone: Vec<u32> = self
            .known
            .keys()
            .filter(|pid| !alive.contains(pid))
            .copied()
            .collect();
        for pid in gone {
            self.forget(pid);
        }
        for process in processes {
            self.consider(process);
        }
        self.publish();
    }

    fn discover(&mut self, pid: u32) {
        // An exec replaces what the pid ran: match it anew.
        self.forget(pid);
        if self.plan.sources.is_empty() {
            return;
        }
        if let Ok(process) = Process::read(&self.proc, pid) {
            self.consider(process);
        }
        self.publish();
    }

    /// A child of a traced process runs what its parent ran, under the same Source, until it
    /// execs something else; the programs already trace it.
    fn inherit(&mut self, pid: u32, parent: u32) {
        let Some((matched, index)) = self.known.get(&parent).cloned() else {
            return;
        };
        let key = match Process::read(&self.proc, pid) {
            Ok(process) => process.key,
            // Gone already (a forking server's child serves one connection): its spans still
            // go out under its parent's Source, then its exit event forgets it.
            Err(_) => ProcessKey { pid, start_time: 0 },
        };
        if self.known.get(&pid).is_some_and(|(m, _)| m.key == key) {
            return; // Seen both forking and as a child.
        }
        if matched.traced
            && let Some(tracer) = &mut self.tracer
            && let Err(e) = tracer.trace(pid, MAX_CAPTURE)
        {
            tracing::warn!(pid, "cannot trace: {e}");
        }
        tracing::info!(pid, parent, source = %matched.source, "forked process traced");
        let matched = Matched { key, ..matched };
        self.known.insert(pid, (matched, index));
        self.publish();
    }

    fn consider(&mut self, process: Process) {
        let pid = process.key.pid;
        if pid == std::process::id() {
            return;
        }
        // In one of its pod's containers: the sandbox's own process is in none, and a
        // container's is found once the pod's status names it (the pods' next update).
        let (pod, container) = process
            .pod_uid
            .as_ref()
            .and_then(|uid| self.pods.get(uid))
            .zip(process.container_id.as_ref())
            .and_then(|(pod, id)| Some((pod, pod.containers.get(id)?.clone())))
            .unzip();
        let Some(index) = self.plan.source_of(&process, pod.map(|p| &**p)) else {
            self.forget(pid);
            return;
        };
        let source = &self.plan.sources[index].0;
        let trace = source.traces_enabled && self.tracer.is_some();
        let runtime = match self.known.get(&pid) {
            Some((known, _)) if known.key == process.key => known.runtime.clone(),
            _ => detect(&self.proc, pid).ok(),
        };
        let matched = Matched {
            key: process.key,
            source: source.source.clone(),
            // Else its workload's name, as Odigos names services, or its executable's.
            service_name: match (source.service_name.as_str(), pod) {
                ("", Some(pod)) => pod.workload_name.clone(),
                ("", None) => process.exe_name().to_string(),
                (name, _) => name.to_string(),
            },
            executable: process.exe_name().to_string(),
            pod: pod.cloned(),
            container,
            runtime,
            traced: trace,
        };
        if let Some(tracer) = &mut self.tracer {
            if trace {
                if let Err(e) = tracer.trace(pid, MAX_CAPTURE) {
                    tracing::warn!(pid, "cannot trace: {e}");
                }
            } else {
                tracer.untrace(pid);
            }
        }
        let changed = self.known.get(&pid).map(|(m, _)| m) != Some(&matched);
        if changed {
            tracing::info!(
                pid,
                executable = %matched.executable,
                source = %matched.source,
                service = %matched.service_name,
                traced = matched.traced,
                "process matched"
            );
        }
        self.known.insert(pid, (matched, index));
        // Children it forked before it was traced (a pre-fork server is quick) run what it
        // runs; those it forks from now on, the programs trace as they fork.
        if changed {
            for child in children(&self.proc, pid) {
                self.inherit(child, pid);
            }
        }
    }

    fn forget(&mut self, pid: u32) {
        if self.known.remove(&pid).is_some()
            && let Some(tracer) = &mut self.tracer
        {
            tracer.untrace(pid);
        }
    }

    fn count_state(&self) {
        let (kernel_connections, lost) = self
            .tracer
            .as_ref()
            .map_or((0, 0), |t| (t.connections(), t.lost()));
        let mut report = self.report();
        report.events_lost = lost;
        report.kernel_connections = kernel_connections;
        report.connections = self.assembler.connections();
    }

    fn publish(&self) {
        let processes = self
            .known
            .iter()
            .map(|(pid, (m, _))| (*pid, m.clone()))
            .collect();
        self.report().processes = processes;
    }

    /// Sends the spans finished so far, one resource per process.
    fn flush(&mut self) {
        let mut spans = self.assembler.take();
        if spans.is_empty() {
            return;
        }
        let mut request = TraceRequest::for_spans(spans.len());
        // Stable: each process's spans stay in the order they finished.
        spans.sort_by_key(|span| span.pid);
        let mut skipped = 0;
        for spans in spans.chunk_by(|a, b| a.pid == b.pid) {
            let pid = spans[0].pid;
            // A process no Source takes any more: its last spans are left out.
            let Some((source, matched)) = self
                .known
                .get(&pid)
                .and_then(|(matched, index)| Some((&self.plan.sources.get(*index)?.0, matched)))
            else {
                skipped += spans.len() as u64;
                continue;
            };
            let kept: Vec<&HttpSpan> = spans
                .iter()
                .filter(|s| sampled(&s.trace_id, source.head_sampling_fraction))
                .filter(|s| {
                    s.kind != Role::Server
                        || !source
                            .dropped_routes
                            .iter()
                            .any(|route| s.target.split('?').next() == Some(route.as_str()))
                })
                .collect();
            skipped += (spans.len() - kept.len()) as u64;
            if kept.is_empty() {
                continue;
            }
            request.resource(
                &self.resource(pid, matched),
                ("odigos-rs/ebpf/http", env!("CARGO_PKG_VERSION")),
                kept,
                &self.clock,
                &source.header_keys,
                source.url_query,
            );
        }
        let count = request.spans() as u64;
        let sent = count > 0 && self.out.try_send(request.finish()).is_ok();
        let mut report = self.report();
        report.spans_sampled_out += skipped;
        if sent {
            report.spans_sent += count;
        } else {
            report.spans_dropped += count;
        }
    }

    fn resource<'a>(&'a self, pid: u32, matched: &'a Matched) -> Vec<(&'static str, Value<'a>)> {
        let mut attributes = vec![
            ("service.name", Value::Str(&matched.service_name)),
            ("host.name", Value::Str(&self.host)),
            ("process.pid", Value::Int(pid.into())),
            ("process.executable.name", Value::Str(&matched.executable)),
            ("telemetry.distro.name", Value::Str("odigos-rs")),
            (
                "telemetry.distro.version",
                Value::Str(env!("CARGO_PKG_VERSION")),
            ),
        ];
        if let Some(runtime) = &matched.runtime {
            attributes.push(("process.runtime.name", Value::Str(runtime.language.name())));
            if let Some(version) = &runtime.version {
                attributes.push(("process.runtime.version", Value::Str(version)));
            }
        }
        if let Some(pod) = &matched.pod {
            attributes.extend([
                ("k8s.namespace.name", Value::Str(&pod.namespace)),
                ("k8s.pod.name", Value::Str(&pod.name)),
                ("k8s.node.name", Value::Str(&pod.node)),
            ]);
            if let Some(key) = pod.workload_attribute() {
                attributes.push((key, Value::Str(&pod.workload_name)));
            }
            if let Some(container) = &matched.container {
                attributes.push(("k8s.container.name", Value::Str(container)));
            }
        }
        attributes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(name: &str, select: ProcessSelector) -> TracedSource {
        TracedSource {
            source: name.into(),
            service_name: String::new(),
            select,
            traces_enabled: true,
            head_sampling_fraction: 1.0,
            header_keys: Vec::new(),
            url_query: false,
            dropped_routes: Vec::new(),
        }
    }

    fn workload(namespace: &str, kind: &str, name: &str) -> ProcessSelector {
        ProcessSelector::Workload(Workload {
            namespace: namespace.into(),
            kind: kind.into(),
            name: name.into(),
        })
    }

    #[test]
    fn pods_are_matched_by_workload_then_by_namespace() {
        let plan = Plan::new(OdigletConfig {
            sources: vec![
                source("shop/checkout", workload("shop", "Deployment", "checkout")),
                source("shop/shop", workload("shop", "Namespace", "shop")),
            ],
        })
        .unwrap();
        let python = Process {
            key: ProcessKey {
                pid: 7,
                start_time: 1,
            },
            exe: "/usr/bin/python3".into(),
            cmdline: vec!["python3".into()],
            cgroup: String::new(),
            pod_uid: Some("u1".into()),
            container_id: Some("c1".into()),
        };
        let pod = |namespace: &str, kind: &str, name: &str| Pod {
            namespace: namespace.into(),
            workload_kind: kind.into(),
            workload_name: name.into(),
            ..Pod::default()
        };
        let of = |p: Option<Pod>| plan.source_of(&python, p.as_ref());
        assert_eq!(of(Some(pod("shop", "Deployment", "checkout"))), Some(0));
        assert_eq!(of(Some(pod("shop", "StatefulSet", "checkout"))), Some(1));
        assert_eq!(of(Some(pod("other", "Deployment", "checkout"))), None);
        // A process in no known pod is no workload's.
        assert_eq!(of(None), None);
    }
}
