//! The Kubernetes store: the odigos.io resources of a cluster (and the Secrets Destinations
//! name), followed with watchers into reflector caches. A resource that does not validate is
//! reported in its status, and its last good version stays in force.
//!
//! It also writes back what the control plane made of the state: a `Ready` condition on every
//! resource, and the InstrumentationConfigs and CollectorsGroups.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store as Cache};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};

mod collectors;
mod lease;
mod pods;
mod webhook_cert;

pub use collectors::{CollectorWorkloads, NODE_STORAGE};
pub use webhook_cert::WebhookCert;

use super::{Change, Desired, Problem, Refusal, Snapshot, Status, Store, WorkloadPods};
use crate::catalog::Catalog;
use crate::resource::{
    Action, CollectorsGroup, DEFAULT_NAMESPACE, Destination, InstrumentationConfig,
    InstrumentationRule, Object, ObjectKey, Sampling, Source, validate,
};

/// How long a change waits for the first list of Secrets of a namespace it starts following.
const SECRETS_LISTED: Duration = Duration::from_secs(5);

/// The field manager of what the control plane writes.
const MANAGER: &str = "odigos";
/// The label on InstrumentationConfigs the control plane wrote, to find stale ones.
const MANAGED_BY: &str = "app.kubernetes.io/managed-by=odigos-rs";

pub struct KubeStore {
    client: Client,
    /// The one namespace followed, or all of them.
    namespace: Option<String>,
    /// Where CollectorsGroups are written.
    home: String,
    published: watch::Sender<Arc<Snapshot>>,
    /// The last good version of every resource, by key.
    good: Mutex<BTreeMap<ObjectKey, Accepted>>,
    /// The generation and conditions of each resource as last seen in the cluster or written
    /// to it, by `Kind/namespace/name`: conditions are written only when they differ.
    observed: Mutex<BTreeMap<String, Observed>>,
    /// What was last applied of the objects the control plane owns, to write only changes.
    written: Mutex<BTreeMap<String, String>>,
    /// Whether the InstrumentationConfigs an earlier run wrote were looked for.
    swept: AtomicBool,
    /// The latest status to write back; reports that come while one is written fold into one.
    pending: Mutex<Option<Status>>,
    /// Wakes the writer.
    wake: Arc<tokio::sync::Notify>,
    /// What owns the objects the control plane creates in `home`, so that they go with it.
    owner: std::sync::OnceLock<OwnerReference>,
    /// Whether this replica holds the leader Lease, when replicas elect one: only the leader
    /// writes to the cluster.
    leading: std::sync::OnceLock<lease::Candidate>,
    /// How collectors run, when the control plane runs them, and the version of the
    /// autoscaling API the cluster serves.
    collectors: std::sync::OnceLock<(CollectorWorkloads, &'static str)>,
    /// The workloads' pods, when followed.
    pods: std::sync::OnceLock<watch::Receiver<Arc<WorkloadPods>>>,
    catalog: &'static Catalog,
}

/// The reflector caches of every kind the store follows.
struct Caches {
    sources: Followed<Source>,
    destinations: Followed<Destination>,
    actions: Followed<Action>,
    rules: Followed<InstrumentationRule>,
    samplings: Followed<Sampling>,
    /// Secrets only in the namespaces that have Destinations (which name Secrets of their
    /// own namespace), each followed while it has one.
    secrets: Mutex<BTreeMap<String, Followed<Secret>>>,
    client: Client,
    changed: mpsc::UnboundedSender<()>,
}

/// A cache and the watcher that fills it, stopped with it.
struct Followed<K: Resource<DynamicType = ()> + 'static> {
    cache: Cache<K>,
    watcher: tokio::task::JoinHandle<()>,
}

impl<K: Resource<DynamicType = ()> + 'static> std::ops::Deref for Followed<K> {
    type Target = Cache<K>;

    fn deref(&self) -> &Cache<K> {
        &self.cache
    }
}

impl<K: Resource<DynamicType = ()> + 'static> Drop for Followed<K> {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

impl Caches {
    /// Follows Secrets in the namespaces that have Destinations now, and no longer in those
    /// that have none. A namespace just followed is waited for until its first list (at most
    /// [`SECRETS_LISTED`]), so that a Destination there finds its Secret at once; a watcher
    /// that cannot list holds up nothing.
    async fn follow_secrets(&self) {
        for secrets in self.start_following_secrets() {
            let _ = tokio::time::timeout(SECRETS_LISTED, secrets.wait_until_ready()).await;
        }
    }

    /// The Secrets' watchers started and stopped; returns the caches just started.
    fn start_following_secrets(&self) -> Vec<Cache<Secret>> {
        let needed: BTreeSet<String> = self
            .destinations
            .state()
            .iter()
            .filter_map(|d| d.namespace())
            .collect();
        let mut secrets = self.secrets.lock().unwrap();
        secrets.retain(|namespace, _| needed.contains(namespace));
        let mut started = Vec::new();
        for namespace in needed {
            if let std::collections::btree_map::Entry::Vacant(slot) = secrets.entry(namespace) {
                tracing::debug!(namespace = slot.key(), "following Secrets");
                let followed = follow(&self.client, Some(slot.key()), self.changed.clone());
                started.push((*followed).clone());
                slot.insert(followed);
            }
        }
        started
    }
}

impl KubeStore {
    /// Like [`KubeStore::start`], with the cluster of `$KUBECONFIG` (or `~/.kube/config`), or
    /// the one this runs in.
    pub async fn connect(
        namespace: Option<&str>,
        home: &str,
        catalog: &'static Catalog,
    ) -> Result<Arc<KubeStore>, kube::Error> {
        let client = Client::try_default().await?;
        KubeStore::start(client, namespace, home, catalog).await
    }

    /// Follows the resources of `namespace` (every namespace when `None`); CollectorsGroups
    /// go to `home`. Returns once every cache holds its first full list.
    pub async fn start(
        client: Client,
        namespace: Option<&str>,
        home: &str,
        catalog: &'static Catalog,
    ) -> Result<Arc<KubeStore>, kube::Error> {
        let (changed, mut changes) = mpsc::unbounded_channel();
        let caches = Caches {
            sources: follow(&client, namespace, changed.clone()),
            destinations: follow(&client, namespace, changed.clone()),
            actions: follow(&client, namespace, changed.clone()),
            rules: follow(&client, namespace, changed.clone()),
            samplings: follow(&client, namespace, changed.clone()),
            secrets: Mutex::default(),
            client: client.clone(),
            changed,
        };
        // Fails early, with the API server's own words, when a CRD is missing or access is
        // refused; the watchers would only retry.
        scoped::<Source>(&client, namespace)
            .list(&ListParams::default().limit(1))
            .await?;
        scoped::<Destination>(&client, namespace)
            .list(&ListParams::default().limit(1))
            .await?;
        for ready in [
            caches.sources.wait_until_ready().await,
            caches.destinations.wait_until_ready().await,
            caches.actions.wait_until_ready().await,
            caches.rules.wait_until_ready().await,
            caches.samplings.wait_until_ready().await,
        ] {
            ready.map_err(|e| kube::Error::Service(Box::new(e)))?;
        }
        // The first snapshot has the Secrets the Destinations name.
        caches.follow_secrets().await;
        let store = Arc::new(KubeStore {
            client,
            namespace: namespace.map(str::to_string),
            home: home.to_string(),
            published: watch::channel(Arc::new(Snapshot::default())).0,
            good: Mutex::default(),
            observed: Mutex::default(),
            written: Mutex::default(),
            swept: AtomicBool::new(false),
            pending: Mutex::default(),
            wake: Arc::default(),
            owner: std::sync::OnceLock::new(),
            leading: std::sync::OnceLock::new(),
            collectors: std::sync::OnceLock::new(),
            pods: std::sync::OnceLock::new(),
            catalog,
        });
        store.rebuild(&caches, catalog);
        spawn_writer(&store);
        let weak = Arc::downgrade(&store);
        tokio::spawn(async move {
            while changes.recv().await.is_some() {
                // A burst of events (a kubectl apply of many files) becomes one snapshot.
                tokio::time::sleep(Duration::from_millis(10)).await;
                while changes.try_recv().is_ok() {}
                caches.follow_secrets().await;
                let Some(store) = weak.upgrade() else { break };
                store.rebuild(&caches, catalog);
            }
        });
        Ok(store)
    }

    /// Validates every cached resource and publishes the snapshot.
    fn rebuild(&self, caches: &Caches, catalog: &Catalog) {
        let mut objects: Vec<Object> = Vec::new();
        objects.extend(
            caches
                .sources
                .state()
                .iter()
                .map(|o| Object::Source((**o).clone())),
        );
        objects.extend(
            caches
                .destinations
                .state()
                .iter()
                .map(|o| Object::Destination((**o).clone())),
        );
        objects.extend(
            caches
                .actions
                .state()
                .iter()
                .map(|o| Object::Action((**o).clone())),
        );
        objects.extend(
            caches
                .rules
                .state()
                .iter()
                .map(|o| Object::InstrumentationRule((**o).clone())),
        );
        objects.extend(
            caches
                .samplings
                .state()
                .iter()
                .map(|o| Object::Sampling((**o).clone())),
        );
        for followed in caches.secrets.lock().unwrap().values() {
            objects.extend(
                followed
                    .state()
                    .iter()
                    .map(|o| Object::Secret((**o).clone())),
            );
        }
        let mut good = self.good.lock().unwrap();
        let present: BTreeSet<ObjectKey> = objects.iter().map(Object::key).collect();
        good.retain(|key, _| present.contains(key));
        // What the cluster holds of a resource is taken in when its spec changed or it is
        // another resource of the same name; otherwise what was last written is newer.
        let mut observed = self.observed.lock().unwrap();
        let mut fresh = BTreeMap::new();
        for object in objects.iter().filter(|o| !matches!(o, Object::Secret(_))) {
            let key = object.key();
            let id = format!("{}/{}/{}", key.kind, key.namespace, key.name);
            let meta = object.meta();
            let seen = match observed.remove(&id) {
                Some(known) if known.uid == meta.uid && known.generation == meta.generation => {
                    known
                }
                _ => Observed {
                    uid: meta.uid.clone(),
                    generation: meta.generation,
                    conditions: object.conditions().to_vec(),
                },
            };
            fresh.insert(id, seen);
        }
        *observed = fresh;
        drop(observed);
        let mut desired = Desired::default();
        let mut problems = Vec::new();
        let mut accepted = BTreeMap::new();
        for object in objects {
            let key = object.key();
            let errors = validate(&object, catalog);
            if errors.is_empty() {
                let version = version(&object);
                let at = match good.get(&key) {
                    Some(last) if last.version == version => last.at.clone(),
                    _ => super::now(),
                };
                accepted.insert(key.to_string(), at.clone());
                good.insert(
                    key,
                    Accepted {
                        object: object.clone(),
                        version,
                        at,
                    },
                );
                desired.insert(object);
                continue;
            }
            for (field, message) in errors {
                problems.push(Problem {
                    source: "kubernetes".into(),
                    line: None,
                    resource: Some(key.to_string()),
                    field: Some(field),
                    message,
                });
            }
            if let Some(last) = good.get(&key) {
                accepted.insert(key.to_string(), last.at.clone());
                desired.insert(last.object.clone());
            }
        }
        drop(good);
        let current = self.published.borrow().clone();
        // The control plane's own status writes come back as events: they change nothing it
        // compiles from, so they publish nothing.
        if current.generation > 0
            && current.problems == problems
            && current.accepted == accepted
            && desired.changes_since(&current.desired).is_empty()
        {
            return;
        }
        for problem in problems.iter().filter(|p| !current.problems.contains(p)) {
            tracing::warn!("resource refused, its last good version stays: {problem}");
        }
        self.published.send_modify(|snapshot| {
            *snapshot = Arc::new(Snapshot {
                desired,
                problems,
                accepted,
                generation: snapshot.generation + 1,
            })
        });
    }

    /// Makes the Deployment `name` in the home namespace (the control plane's own) the owner
    /// of the CollectorsGroups written from now on, so that uninstalling it removes them.
    pub async fn owned_by_deployment(&self, name: &str) -> Result<(), kube::Error> {
        let deployment = Api::<Deployment>::namespaced(self.client.clone(), &self.home)
            .get(name)
            .await?;
        if let Some(owner) = deployment.owner_ref(&()) {
            let _ = self.owner.set(owner);
        }
        Ok(())
    }

    /// Follows the pods of the followed namespaces, to tell which workloads run pods created
    /// before their Source (the pod webhook marks those it gives the SDK environment).
    pub fn follow_pods(&self) {
        let _ = self
            .pods
            .set(pods::follow(&self.client, self.namespace.as_deref()));
    }

    /// Writes to the cluster only while holding the Lease `odigos-control-plane` in the home
    /// namespace, which replicas compete for as `identity` (unique among them).
    pub fn elect_leader(&self, identity: String) {
        let api = Api::namespaced(self.client.clone(), &self.home);
        let candidate = lease::Candidate::compete(api, identity, self.wake.clone());
        let _ = self.leading.set(candidate);
    }

    /// Whether this replica writes to the cluster: it leads, or there is no election.
    fn leads(&self) -> bool {
        self.leading.get().is_none_or(lease::Candidate::leads)
    }

    /// Keeps the pod webhook's certificate renewed (while this replica leads), looking at it
    /// now and then every hour.
    pub fn renew_webhook_cert(self: &Arc<Self>, names: WebhookCert) {
        /// How soon a replica that does not lead, or failed, looks again.
        const AGAIN: Duration = Duration::from_secs(10);
        let store = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(store) = store.upgrade() else { return };
                let wait = if !store.leads() {
                    AGAIN
                } else {
                    match webhook_cert::renew_if_due(&store.client, &store.home, &names).await {
                        Ok(Some(until)) => {
                            tracing::info!(secret = names.secret, %until, "pod webhook certificate renewed");
                            webhook_cert::CHECK_EVERY
                        }
                        Ok(None) => webhook_cert::CHECK_EVERY,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot renew the pod webhook certificate; trying again");
                            AGAIN * 3
                        }
                    }
                };
                drop(store);
                tokio::time::sleep(wait).await;
            }
        });
    }

    /// Stops competing for the Lease and lets it go, as this replica stops.
    pub async fn resign(&self) {
        if let Some(candidate) = self.leading.get() {
            candidate.resign().await;
        }
    }

    /// Runs the collectors from now on: creates the gateway's Service at once (owned like the
    /// CollectorsGroups); with each write of the CollectorsGroups, the gateway's Deployment and
    /// HorizontalPodAutoscaler, and once the gateway is ready the node collectors' DaemonSet.
    /// Returns the gateway Service's address, where node collectors send.
    pub async fn run_collectors(
        &self,
        workloads: CollectorWorkloads,
    ) -> Result<String, kube::Error> {
        let service = collectors::service(&self.home, self.owner.get());
        let service = collectors::apply(&self.client, "services", &service).await?;
        let address = service["spec"]["clusterIP"].as_str().unwrap_or_default();
        // autoscaling/v2 is served from Kubernetes 1.23; v2beta2 before.
        let version = match self.client.list_api_group_resources("autoscaling/v2").await {
            Ok(_) => "v2",
            Err(kube::Error::Api(e)) if e.code == 404 => "v2beta2",
            Err(e) => return Err(e),
        };
        let _ = self.collectors.set((workloads, version));
        Ok(format!("http://{address}:4317"))
    }

    /// Writes `state` back: conditions, InstrumentationConfigs, CollectorsGroups and the
    /// collectors' workloads.
    async fn write(&self, state: Status) -> Result<(), kube::Error> {
        // Nothing compiled yet: an empty state would read as "no InstrumentationConfigs".
        if state.generation == 0 {
            return Ok(());
        }
        // To the second, as the cluster keeps it.
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        let now = Time(k8s_openapi::jiff::Timestamp::from_second(now).unwrap_or_default());
        // Each resource's conditions, written only where they changed.
        let mut changed = Vec::new();
        for ((kind, namespace, name), list) in state.conditions {
            let id = format!("{kind}/{namespace}/{name}");
            let Some(seen) = self.observed.lock().unwrap().get(&id).cloned() else {
                continue;
            };
            // A condition's transition time moves only when its status does.
            let conditions: Vec<Condition> = list
                .into_iter()
                .map(|c| {
                    let status = c.status.to_string();
                    let since = seen
                        .conditions
                        .iter()
                        .find(|p| p.type_ == c.kind && p.status == status)
                        .map_or_else(|| now.clone(), |p| p.last_transition_time.clone());
                    Condition {
                        type_: c.kind.into(),
                        status,
                        reason: c.reason,
                        message: c.message,
                        last_transition_time: since,
                        observed_generation: seen.generation,
                    }
                })
                .collect();
            if conditions != seen.conditions {
                // Owned: a borrowed kind would tie the write futures to one lifetime.
                changed.push((id, kind.to_string(), namespace, name, conditions));
            }
        }
        in_parallel(
            changed,
            |(id, kind, namespace, name, conditions)| async move {
                let client = &self.client;
                let (ns, name) = (namespace.as_str(), name.as_str());
                let status = serde_json::json!({"conditions": conditions});
                let result = match kind.as_str() {
                    "Source" => apply_status::<Source>(client, ns, name, status).await,
                    "Destination" => apply_status::<Destination>(client, ns, name, status).await,
                    "Action" => apply_status::<Action>(client, ns, name, status).await,
                    "InstrumentationRule" => {
                        apply_status::<InstrumentationRule>(client, ns, name, status).await
                    }
                    "Sampling" => apply_status::<Sampling>(client, ns, name, status).await,
                    _ => Ok(()),
                };
                match result {
                    Ok(()) => {
                        if let Some(known) = self.observed.lock().unwrap().get_mut(&id) {
                            known.conditions = conditions;
                        }
                        Ok(())
                    }
                    // Deleted meanwhile: nothing to report on.
                    Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                    Err(e) => Err(e),
                }
            },
        )
        .await?;
        let mut wanted = BTreeSet::new();
        let mut changed = Vec::new();
        for mut config in state.instrumentation_configs {
            config.metadata.labels = Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                "odigos-rs".to_string(),
            )]));
            let namespace = config.namespace().unwrap_or_default();
            let name = config.name_any();
            wanted.insert((namespace.clone(), name.clone()));
            let text = serde_json::to_string(&config).unwrap_or_default();
            let id = format!("InstrumentationConfig/{namespace}/{name}");
            let before = self.written.lock().unwrap().get(&id).cloned();
            if before.as_ref() != Some(&text) {
                changed.push((id, config, text, before));
            }
        }
        in_parallel(changed, |(id, config, text, before)| async move {
            let namespace = config.namespace().unwrap_or_default();
            let name = config.name_any();
            let apply = PatchParams::apply(MANAGER).force();
            let api: Api<InstrumentationConfig> = Api::namespaced(self.client.clone(), &namespace);
            api.patch(&name, &apply, &Patch::Apply(&config)).await?;
            // The status is a subresource, applied on its own when there is one, or was (an
            // empty one takes back the runtime details this manager set before).
            let had_status = before.is_some_and(|t| t.contains(r#""status":{"#));
            if config.status.is_some() || had_status {
                let status = config.status.clone().unwrap_or_default();
                apply_status::<InstrumentationConfig>(&self.client, &namespace, &name, status)
                    .await?;
            }
            self.written.lock().unwrap().insert(id, text);
            Ok(())
        })
        .await?;
        // Those an earlier run wrote are found once, by their label; after that, this run
        // knows what it wrote.
        if !self.swept.swap(true, Ordering::Relaxed) {
            let api = scoped::<InstrumentationConfig>(&self.client, self.namespace.as_deref());
            let found = api.list(&ListParams::default().labels(MANAGED_BY)).await;
            let found = found.inspect_err(|_| self.swept.store(false, Ordering::Relaxed))?;
            let mut written = self.written.lock().unwrap();
            for config in found {
                let (namespace, name) = (config.namespace().unwrap_or_default(), config.name_any());
                let id = format!("InstrumentationConfig/{namespace}/{name}");
                written.entry(id).or_default();
            }
        }
        let stale: Vec<(String, String)> = self
            .written
            .lock()
            .unwrap()
            .keys()
            .filter_map(|id| {
                let (namespace, name) =
                    id.strip_prefix("InstrumentationConfig/")?.split_once('/')?;
                let key = (namespace.to_string(), name.to_string());
                (!wanted.contains(&key)).then_some(key)
            })
            .collect();
        for (namespace, name) in stale {
            let deleted = Api::<InstrumentationConfig>::namespaced(self.client.clone(), &namespace)
                .delete(&name, &DeleteParams::default())
                .await;
            match deleted {
                Ok(_) => {}
                // Gone already.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
            self.written
                .lock()
                .unwrap()
                .remove(&format!("InstrumentationConfig/{namespace}/{name}"));
        }
        let apply = PatchParams::apply(MANAGER).force();
        let groups: Api<CollectorsGroup> = Api::namespaced(self.client.clone(), &self.home);
        for group in &state.collectors_groups {
            let mut spec_only = group.clone();
            spec_only.status = None;
            spec_only.metadata.namespace = Some(self.home.clone());
            spec_only.metadata.owner_references = self.owner.get().cloned().map(|o| vec![o]);
            let name = group.name_any();
            groups
                .patch(&name, &apply, &Patch::Apply(&spec_only))
                .await?;
            if let Some(status) = &group.status {
                let patch = Patch::Merge(serde_json::json!({"status": status}));
                groups
                    .patch_status(&name, &PatchParams::default(), &patch)
                    .await?;
            }
        }
        if let Some((workloads, version)) = self.collectors.get() {
            self.write_collectors(workloads, version, &state.collectors_groups)
                .await?;
        }
        Ok(())
    }

    /// Applies the collectors' workloads that changed since last written: the gateway's from
    /// its group, the node collectors' once the gateway is ready (they send to it).
    async fn write_collectors(
        &self,
        workloads: &CollectorWorkloads,
        version: &str,
        groups: &[CollectorsGroup],
    ) -> Result<(), kube::Error> {
        let role = |role: &str| groups.iter().find(|g| g.spec.role == role);
        let owner = self.owner.get();
        let mut objects = Vec::new();
        if let Some(gateway) = role("CLUSTER_GATEWAY") {
            objects.push((
                "deployments",
                collectors::gateway(workloads, gateway, &self.home, owner),
            ));
            objects.push((
                "horizontalpodautoscalers",
                collectors::autoscaler(version, gateway, &self.home, owner),
            ));
            let node_started = self
                .written
                .lock()
                .unwrap()
                .contains_key("collectors/daemonsets");
            let gateway_ready = gateway.status.as_ref().is_some_and(|s| s.ready);
            if let Some(node) = role("NODE_COLLECTOR")
                && (gateway_ready || node_started)
            {
                objects.push((
                    "daemonsets",
                    collectors::node(workloads, node, &self.home, owner),
                ));
            }
        }
        for (plural, object) in objects {
            let id = format!("collectors/{plural}");
            let text = object.to_string();
            if self.written.lock().unwrap().get(&id) == Some(&text) {
                continue;
            }
            collectors::apply(&self.client, plural, &object).await?;
            self.written.lock().unwrap().insert(id, text);
        }
        Ok(())
    }
}

/// How many writes are in flight at once: thousands of resources are written in seconds,
/// not one round trip after another.
const WRITES_IN_FLIGHT: usize = 16;

/// Runs `write` over `items`, [`WRITES_IN_FLIGHT`] at a time; the first error, once those in
/// flight are done.
async fn in_parallel<T, F, Fut>(items: Vec<T>, write: F) -> Result<(), kube::Error>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Result<(), kube::Error>>,
{
    let results: Vec<Result<(), kube::Error>> = futures_util::stream::iter(items)
        .map(write)
        .buffer_unordered(WRITES_IN_FLIGHT)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Applies `status` as the status of the `K` `namespace/name`, server-side, as the control
/// plane's field manager: what it sets there is its own.
async fn apply_status<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    status: impl serde::Serialize,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let status = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    Api::<K>::namespaced(client.clone(), namespace)
        .patch_status(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&status),
        )
        .await
        .map(drop)
}

/// The resources of kind `K` in `namespace`, or in every namespace.
fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Follows every `K` of `namespace` (or of all) through a watcher into a cache; each change
/// is signalled on `changed`.
fn follow<K>(
    client: &Client,
    namespace: Option<&str>,
    changed: mpsc::UnboundedSender<()>,
) -> Followed<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    let api = scoped(client, namespace);
    let (reader, writer) = reflector::store();
    let stream =
        reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    let watcher = tokio::spawn(async move {
        futures_util::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => {
                    if changed.send(()).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(kind = K::kind(&()).as_ref(), error = %e, "watch failed; retrying")
                }
            }
        }
    });
    Followed {
        cache: reader,
        watcher,
    }
}

#[async_trait::async_trait]
impl Store for KubeStore {
    fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.published.subscribe()
    }

    async fn change(&self, change: Change) -> Result<(), Refusal> {
        change.check(self.catalog)?;
        let key = change.key();
        let mut snapshots = self.published.subscribe();
        let client = &self.client;
        let result = match &change {
            Change::Create(object) | Change::Update(object) => {
                let create = matches!(change, Change::Create(_));
                match object {
                    Object::Source(o) => write_object(client, o, create).await,
                    Object::Destination(o) => {
                        let (destination, secret) = split_secrets(o, self.catalog);
                        match secret {
                            Some(secret) => match put_secret(client, &secret).await {
                                Ok(()) => write_object(client, &destination, create).await,
                                Err(e) => Err(e),
                            },
                            None => write_object(client, &destination, create).await,
                        }
                    }
                    Object::Action(o) => write_object(client, o, create).await,
                    Object::InstrumentationRule(o) => write_object(client, o, create).await,
                    Object::Sampling(o) => write_object(client, o, create).await,
                    Object::Secret(o) => write_object(client, o, create).await,
                }
            }
            Change::Delete(key) => match key.kind {
                "Source" => delete_object::<Source>(client, key).await,
                "Destination" => {
                    let deleted = delete_object::<Destination>(client, key).await;
                    if deleted.is_ok() {
                        delete_own_secret(client, key).await;
                    }
                    deleted
                }
                "Action" => delete_object::<Action>(client, key).await,
                "InstrumentationRule" => delete_object::<InstrumentationRule>(client, key).await,
                "Sampling" => delete_object::<Sampling>(client, key).await,
                _ => delete_object::<Secret>(client, key).await,
            },
        };
        match result {
            Err(kube::Error::Api(status))
                if status.code == 409 && matches!(change, Change::Create(_)) =>
            {
                Err(Refusal::Exists(key))
            }
            Err(kube::Error::Api(status)) if status.code == 404 => Err(Refusal::Missing(key)),
            Err(e) => Err(Refusal::Failed(format!("the cluster refused {key}: {e}"))),
            Ok(()) => {
                // The watchers bring the change back; wait (a while) until it is published.
                let present = !matches!(change, Change::Delete(_));
                let published =
                    snapshots.wait_for(|snapshot| snapshot.desired.get(&key).is_some() == present);
                let _ = tokio::time::timeout(Duration::from_secs(10), published).await;
                Ok(())
            }
        }
    }

    fn kubernetes(&self) -> bool {
        true
    }

    fn workload_pods(&self) -> Option<watch::Receiver<Arc<WorkloadPods>>> {
        self.pods.get().cloned()
    }

    fn report(self: Arc<Self>, state: Status) {
        *self.pending.lock().unwrap() = Some(state);
        self.wake.notify_one();
    }
}

impl Drop for KubeStore {
    fn drop(&mut self) {
        // The writer finds the store gone and ends.
        self.wake.notify_one();
    }
}

/// The first wait before writing again after a failure, and the longest.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_LAST: Duration = Duration::from_secs(30);

/// Writes each reported status back, one at a time and only the latest, while this replica
/// leads; a write that fails (the API server away, access refused) is tried again with
/// backoff, with the latest status.
fn spawn_writer(store: &Arc<KubeStore>) {
    let weak = Arc::downgrade(store);
    let wake = store.wake.clone();
    tokio::spawn(async move {
        let mut retry = RETRY_FIRST;
        loop {
            wake.notified().await;
            loop {
                let Some(store) = weak.upgrade() else { return };
                // Not leading, the latest status waits; leading wakes the writer.
                if !store.leads() {
                    break;
                }
                let Some(state) = store.pending.lock().unwrap().take() else {
                    break;
                };
                match store.write(state.clone()).await {
                    Ok(()) => retry = RETRY_FIRST,
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?retry, "cannot write status back to the cluster");
                        // A newer status, if one came meanwhile, is the one to write.
                        store.pending.lock().unwrap().get_or_insert(state);
                        drop(store);
                        tokio::time::sleep(retry).await;
                        retry = (retry * 2).min(RETRY_LAST);
                    }
                }
            }
        }
    });
}

/// The label on a Secret that holds a Destination's secret fields, naming the Destination.
const SECRET_OF: &str = "odigos.io/destination";

/// A Destination as the cluster keeps it: its secret fields moved out of `spec.data` into a
/// Secret it references (the one it names already, or `destination-NAME`), so no secret is
/// kept in the custom resource.
fn split_secrets(destination: &Destination, catalog: &Catalog) -> (Destination, Option<Secret>) {
    let mut destination = destination.clone();
    let Some(kind) = catalog.get(&destination.spec.destination_type) else {
        return (destination, None);
    };
    let secret: BTreeMap<String, String> = destination
        .spec
        .data
        .iter()
        .filter(|(field, _)| kind.field(field).is_some_and(|f| f.secret))
        .map(|(field, value)| (field.clone(), value.clone()))
        .collect();
    if secret.is_empty() {
        return (destination, None);
    }
    destination
        .spec
        .data
        .retain(|field, _| !secret.contains_key(field));
    let name = destination.name_any();
    let reference = destination
        .spec
        .secret_ref
        .get_or_insert_with(|| crate::resource::SecretRef {
            name: format!("destination-{name}"),
        });
    let mut object = Secret::default();
    object.metadata.name = Some(reference.name.clone());
    object.metadata.namespace = destination.namespace();
    object.metadata.labels = Some(BTreeMap::from([(SECRET_OF.to_string(), name)]));
    object.string_data = Some(secret);
    (destination, Some(object))
}

/// Creates `secret`, or sets its keys in the Secret of that name (its other keys kept).
async fn put_secret(client: &Client, secret: &Secret) -> Result<(), kube::Error> {
    let namespace = secret
        .namespace()
        .unwrap_or_else(|| DEFAULT_NAMESPACE.into());
    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    match api.get_opt(&secret.name_any()).await? {
        None => api.create(&PostParams::default(), secret).await.map(drop),
        Some(mut current) => {
            let data = current.data.get_or_insert_with(Default::default);
            for (key, value) in secret.string_data.iter().flatten() {
                data.insert(
                    key.clone(),
                    k8s_openapi::ByteString(value.clone().into_bytes()),
                );
            }
            api.replace(&secret.name_any(), &PostParams::default(), &current)
                .await
                .map(drop)
        }
    }
}

/// Deletes the Secret made for a Destination's secret fields, if there is one.
async fn delete_own_secret(client: &Client, destination: &ObjectKey) {
    let api: Api<Secret> = Api::namespaced(client.clone(), &destination.namespace);
    let name = format!("destination-{}", destination.name);
    let ours = api
        .get_opt(&name)
        .await
        .ok()
        .flatten()
        .is_some_and(|secret| secret.labels().get(SECRET_OF) == Some(&destination.name));
    if ours && let Err(e) = api.delete(&name, &DeleteParams::default()).await {
        tracing::warn!(secret = %name, error = %e, "cannot delete a deleted Destination's Secret");
    }
}

/// Creates `object`, or replaces the version that exists (an update never creates). A new
/// version without labels or annotations keeps those of the version it replaces: what
/// `kubectl` or other tools put there is theirs.
async fn write_object<K>(client: &Client, object: &K, create: bool) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + Debug
        + serde::Serialize
        + DeserializeOwned,
{
    let namespace = object
        .namespace()
        .unwrap_or_else(|| DEFAULT_NAMESPACE.into());
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    if create {
        api.create(&PostParams::default(), object).await?;
        return Ok(());
    }
    // The control plane writes statuses too, each a new resourceVersion: a replace that
    // lost that race is tried again on the version now there.
    let mut attempts = 0;
    loop {
        let mut object = object.clone();
        let current = api.get(&object.name_any()).await?;
        let (meta, was) = (object.meta_mut(), current.meta());
        meta.resource_version = was.resource_version.clone();
        if meta.labels.is_none() {
            meta.labels = was.labels.clone();
        }
        if meta.annotations.is_none() {
            meta.annotations = was.annotations.clone();
        }
        attempts += 1;
        match api
            .replace(&object.name_any(), &PostParams::default(), &object)
            .await
        {
            Err(kube::Error::Api(status)) if status.code == 409 && attempts < 5 => continue,
            result => return result.map(drop),
        }
    }
}

async fn delete_object<K>(client: &Client, key: &ObjectKey) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), &key.namespace);
    api.delete(&key.name, &DeleteParams::default()).await?;
    Ok(())
}

/// The last good version of a resource, and when it was accepted.
/// A resource as the control plane last knew it in the cluster.
#[derive(Clone, Debug, Default)]
struct Observed {
    uid: Option<String>,
    generation: Option<i64>,
    conditions: Vec<Condition>,
}

struct Accepted {
    object: Object,
    version: Option<String>,
    at: String,
}

/// What tells one version of a resource from another: its generation, which only its spec
/// changes, or for a Secret its resource version.
fn version(object: &Object) -> Option<String> {
    let meta = object.meta();
    meta.generation
        .map(|g| g.to_string())
        .or_else(|| meta.resource_version.clone())
}
