//! The GraphQL API at `/graphql`: the fleet, the desired state with how it stands, the
//! destination catalog, and changes to the desired state, which go through the store and its
//! validation like a file or `kubectl apply` would. Subscriptions speak `graphql-transport-ws`
//! on the same path.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::{Context, Enum, Json, Object, Schema, SimpleObject, Subscription};
use futures_util::Stream;
use odigos_proto::opamp::hex;

use crate::catalog::Catalog;
use crate::compiler::destination_exporters;
use crate::opamp::{AgentBrief, AgentView, ConfigStatus, Fleet};
use crate::reconciler::{ControlPlane, ROLE, RolloutRecord, WORKLOAD};
use crate::resource::{self, ObjectKey};
use crate::store::{self, Change, Refusal, Store};
use crate::throughput::{Rates, Throughput};

/// What resolvers work with.
pub struct Backend {
    pub fleet: Arc<Fleet>,
    /// The control plane and its store, when there is a desired state.
    pub plane: Option<(Arc<ControlPlane>, Arc<dyn Store>)>,
    /// Every mutation is refused.
    pub read_only: bool,
    pub throughput: Throughput,
}

pub type ApiSchema = Schema<Query, Mutation, SubscriptionRoot>;

/// Deeper or costlier queries are refused before they run.
const MAX_DEPTH: usize = 12;
const MAX_COMPLEXITY: usize = 20_000;
/// The role of an agent that names none: an SDK's.
const SDK: &str = "sdk";
/// How long `testDestination` waits for an exporter's answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);
const READ_ONLY: &str = "the UI is read-only (--ui-read-only): nothing can be changed";
/// Changes pushed to a subscriber at most this often; what happens between is folded in.
const PUSH_EVERY: Duration = Duration::from_millis(250);

pub fn schema(backend: Backend) -> ApiSchema {
    Schema::build(Query, Mutation, SubscriptionRoot)
        .data(backend)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .finish()
}

/// `POST /graphql` for queries and mutations; a WebSocket upgrade of `GET /graphql` for
/// subscriptions.
pub fn router(schema: ApiSchema) -> axum::Router {
    use async_graphql_axum::{GraphQL, GraphQLSubscription};
    axum::Router::new().route(
        "/graphql",
        axum::routing::post_service(GraphQL::new(schema.clone()))
            .get_service(GraphQLSubscription::new(schema)),
    )
}

fn backend<'a>(ctx: &Context<'a>) -> &'a Backend {
    ctx.data_unchecked::<Backend>()
}

/// The control plane, or the error that this server has none.
fn plane<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a (Arc<ControlPlane>, Arc<dyn Store>)> {
    backend(ctx)
        .plane
        .as_ref()
        .ok_or_else(|| "this server only serves the fleet: it has no desired state".into())
}

pub struct Query;

#[Object]
impl Query {
    /// Every agent the server knows, live or recently gone; narrowed by role, node or status.
    async fn agents(
        &self,
        ctx: &Context<'_>,
        role: Option<String>,
        node: Option<String>,
        status: Option<AgentStatus>,
    ) -> Vec<Agent> {
        let filter = AgentFilter {
            role,
            node,
            status,
            ..AgentFilter::default()
        };
        backend(ctx)
            .fleet
            .agents()
            .into_iter()
            .filter(|view| {
                let host = attribute(view, "host.name");
                filter.keeps(
                    Agent::role_of(view),
                    host,
                    status_of(view),
                    desired_hash(view),
                )
            })
            .map(Agent)
            .collect()
    }

    /// A window of the agents that `filter` keeps, failing ones first: what a table that
    /// shows only the rows in view asks for. At most 500 rows at once.
    async fn agent_page(
        &self,
        ctx: &Context<'_>,
        #[graphql(default)] filter: AgentFilter,
        #[graphql(default)] offset: usize,
        #[graphql(default = 100)] limit: usize,
    ) -> AgentPage {
        let fleet = &backend(ctx).fleet;
        let briefs = fleet.briefs(&[ROLE, "host.name"]);
        let role = |b: &AgentBrief| b.attributes[0].as_deref().unwrap_or(SDK).to_string();
        let roles: std::collections::BTreeSet<String> = briefs.iter().map(role).collect();
        let mut kept: Vec<&AgentBrief> = briefs
            .iter()
            .filter(|b| {
                let (status, hash) = (status(b.connected, &b.config), hash_of(&b.config));
                filter.keeps(&role(b), b.attributes[1].as_deref(), status, hash)
            })
            .collect();
        kept.sort_by_key(|b| (status(b.connected, &b.config) != AgentStatus::Failed, b.uid));
        let total = kept.len();
        let agents = kept
            .into_iter()
            .skip(offset)
            .take(limit.min(500))
            .filter_map(|b| fleet.view(&b.uid))
            .map(Agent)
            .collect();
        AgentPage {
            total,
            roles,
            agents,
        }
    }

    /// One agent, by its uid in hex.
    async fn agent(&self, ctx: &Context<'_>, uid: String) -> Option<Agent> {
        backend(ctx)
            .fleet
            .agent(&uid.to_ascii_lowercase())
            .map(Agent)
    }

    /// How many agents stand where, for the bar over the fleet view.
    async fn fleet_summary(&self, ctx: &Context<'_>) -> FleetSummary {
        FleetSummary::of(&backend(ctx).fleet.briefs(&[]))
    }

    /// Each role's agents: how many stand where, and what its collectors take in, deliver and
    /// drop. What the overview shows without listing every agent.
    async fn roles(&self, ctx: &Context<'_>) -> Vec<RoleSummary> {
        let backend = backend(ctx);
        let briefs = backend.fleet.briefs(&[ROLE]);
        let rates = backend.throughput.rates();
        let mut roles: std::collections::BTreeMap<String, (Vec<AgentBrief>, Option<ItemRates>)> =
            Default::default();
        // Only collectors are measured: most agents need no lookup.
        let measured = !rates.collectors.is_empty();
        for brief in briefs {
            let role = brief.attributes[0]
                .clone()
                .unwrap_or_else(|| SDK.to_string());
            let (agents, throughput) = roles.entry(role).or_default();
            let rate = measured.then(|| rates.collectors.get(&hex(&brief.uid)));
            if let Some(rate) = rate.flatten() {
                let total = throughput.get_or_insert_with(ItemRates::default);
                total.received += rate.received;
                total.sent += rate.sent;
                total.failed += rate.failed;
            }
            agents.push(brief);
        }
        roles
            .into_iter()
            .map(|(role, (agents, throughput))| RoleSummary {
                role,
                summary: FleetSummary::of(&agents),
                throughput,
            })
            .collect()
    }

    /// The desired state's version, counting from 1; 0 before the first.
    async fn generation(&self, ctx: &Context<'_>) -> async_graphql::Result<u64> {
        Ok(*plane(ctx)?.0.generations().borrow())
    }

    /// Every Source with how it stands and the processes it matched.
    async fn sources(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Source>> {
        let (plane, store) = plane(ctx)?;
        let snapshot = store.subscribe().borrow().clone();
        let rates = backend(ctx).throughput.rates();
        Ok(plane
            .state()
            .sources
            .into_iter()
            .map(|view| {
                let yaml = document(&snapshot.desired, "Source", &view.name);
                let spec = spec_of(&snapshot.desired, "Source", &view.name);
                let throughput = snapshot
                    .desired
                    .sources
                    .get(&split(&view.name))
                    .map(|source| source_rate(&rates, source));
                Source {
                    view,
                    yaml,
                    spec,
                    throughput,
                }
            })
            .collect())
    }

    /// Every `service.name` the node collectors took data from lately, with items per second:
    /// SDK services that no Source names show here too.
    async fn services(&self, ctx: &Context<'_>) -> Vec<ServiceRate> {
        let rates = backend(ctx).throughput.rates();
        let sources: Vec<_> = match &backend(ctx).plane {
            Some((_, store)) => {
                let snapshot = store.subscribe().borrow().clone();
                let sources = snapshot.desired.sources.iter();
                sources
                    .map(|((namespace, name), source)| {
                        (format!("{namespace}/{name}"), serves(source))
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        rates
            .services
            .iter()
            .map(|(service, &items)| ServiceRate {
                service: service.clone(),
                items,
                source: sources
                    .iter()
                    .find(|(_, serves)| serves(service))
                    .map(|(name, _)| name.clone()),
            })
            .collect()
    }

    /// Every Destination with how it stands; secret fields are never shown.
    async fn destinations(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Destination>> {
        let (plane, store) = plane(ctx)?;
        let snapshot = store.subscribe().borrow().clone();
        let catalog = Catalog::builtin();
        let rates = backend(ctx).throughput.rates();
        Ok(plane
            .state()
            .destinations
            .into_values()
            .map(|view| {
                let (namespace, name) = split(&view.name);
                let data = snapshot
                    .desired
                    .destinations
                    .get(&(namespace, name))
                    .map(|d| {
                        let kind = catalog.get(&d.spec.destination_type);
                        d.spec
                            .data
                            .iter()
                            .filter(|(key, _)| {
                                !kind.and_then(|t| t.field(key)).is_some_and(|f| f.secret)
                            })
                            .map(|(key, value)| Attribute {
                                key: key.clone(),
                                value: value.clone(),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let throughput = destination_rate(&rates, &view);
                Destination {
                    view,
                    data,
                    throughput,
                }
            })
            .collect())
    }

    /// The kinds of destination there are, with the fields each one's form asks for.
    async fn destination_types(&self) -> Vec<DestinationType> {
        Catalog::builtin()
            .types()
            .map(|t| DestinationType {
                name: t.name.clone(),
                display_name: t.display_name.clone(),
                category: t.category.clone(),
                signals: t
                    .signals
                    .iter()
                    .map(|s| s.pipeline().to_uppercase())
                    .collect(),
                fields: t
                    .fields
                    .iter()
                    .map(|f| Field {
                        name: f.name.clone(),
                        display_name: f.display_name.clone(),
                        kind: serde_json::to_value(f.kind)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default(),
                        required: f.required,
                        secret: f.secret,
                        tooltip: f.tooltip.clone(),
                        values: f.values.clone(),
                        default: f.default.clone(),
                    })
                    .collect(),
            })
            .collect()
    }

    /// Actions, InstrumentationRules and Samplings with how each stands, of one kind or all.
    async fn resources(
        &self,
        ctx: &Context<'_>,
        kind: Option<Kind>,
    ) -> async_graphql::Result<Vec<Resource>> {
        let (plane, store) = plane(ctx)?;
        let snapshot = store.subscribe().borrow().clone();
        Ok(plane
            .state()
            .resources
            .into_iter()
            .filter(|r| kind.is_none_or(|k| k.name() == r.kind))
            .map(|view| Resource {
                yaml: document(&snapshot.desired, &view.kind, &view.name),
                spec: spec_of(&snapshot.desired, &view.kind, &view.name),
                kind: view.kind,
                name: view.name,
                condition: Condition::from(view.condition),
            })
            .collect())
    }

    /// The collectors groups the control plane computes (the gateway, the node collectors):
    /// each one's role, sizing and whether its collectors run its config.
    async fn collectors_groups(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<CollectorsGroup>> {
        Ok(plane(ctx)?
            .0
            .state()
            .collectors_groups
            .into_iter()
            .map(|group| {
                let status = group.status.unwrap_or_default();
                CollectorsGroup {
                    name: group.metadata.name.unwrap_or_default(),
                    role: group.spec.role,
                    ready: status.ready,
                    signals: status
                        .receiver_signals
                        .iter()
                        .map(|s| s.pipeline().to_uppercase())
                        .collect(),
                    resources: Json(
                        serde_json::to_value(group.spec.resources_settings).unwrap_or_default(),
                    ),
                }
            })
            .collect())
    }

    /// The OpenAPI schema of a kind's `spec`, as its CRD has it: what the UI draws a form
    /// from (types, enums, required fields, descriptions).
    async fn spec_schema(&self, kind: Kind) -> Option<Json<serde_json::Value>> {
        let crd = resource::crds()
            .into_iter()
            .find(|crd| crd.spec.names.kind == kind.name())?;
        let schema = crd
            .spec
            .versions
            .first()?
            .schema
            .as_ref()?
            .open_api_v3_schema
            .as_ref()?;
        let schema = serde_json::to_value(schema).ok()?;
        Some(Json(schema["properties"]["spec"].clone()))
    }

    /// Everything that is refused, with where and why: resources of the desired state, and
    /// configs that agents could not apply.
    async fn problems(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Problem>> {
        let refused = plane(ctx)?
            .0
            .state()
            .problems
            .into_iter()
            .map(Problem::from);
        let failed = backend(ctx).fleet.agents().into_iter().filter_map(|agent| {
            let ConfigStatus::Failed { error, .. } = &agent.config else {
                return None;
            };
            agent.connected?;
            let role = attribute(&agent, ROLE)
                .or(attribute(&agent, WORKLOAD))
                .unwrap_or("sdk");
            Some(Problem {
                source: format!("{role} agent {}", agent.uid),
                line: None,
                resource: None,
                field: None,
                message: format!("cannot apply its config: {error}"),
            })
        });
        Ok(refused.chain(failed).collect())
    }

    /// Each role's and workload's config hash and how far its agents are with it.
    async fn rollouts(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Rollout>> {
        Ok(rollouts_now(&plane(ctx)?.0, &backend(ctx).fleet))
    }

    /// The latest rollouts, newest first: each new config of a role or workload, with the
    /// changes to the desired state that made it. One that a later rollout replaced counts
    /// the agents that applied or failed it while it was current.
    async fn rollout_history(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] limit: usize,
    ) -> async_graphql::Result<Vec<Rollout>> {
        let plane = &plane(ctx)?.0;
        let current = plane.hashes();
        let fleet = &backend(ctx).fleet;
        let (briefs, views) = (fleet.briefs(&[]), fleet.agents());
        Ok(plane
            .rollouts()
            .into_iter()
            .rev()
            .take(limit)
            .map(|record| {
                let superseded = current.get(&record.target) != Some(&record.hash);
                let (target, hash) = (record.target.clone(), record.hash.clone());
                let rollout = Rollout::new(&target, &hash, Some(record), superseded);
                match superseded {
                    true => rollout.counted_by_history(&views),
                    false => rollout.counted_now(&briefs),
                }
            })
            .collect())
    }
}

pub struct Mutation;

#[Object]
impl Mutation {
    /// Creates a resource from its spec; refused when one of its kind and name exists.
    async fn create_resource(
        &self,
        ctx: &Context<'_>,
        kind: Kind,
        #[graphql(default = "default")] namespace: String,
        name: String,
        spec: Json<serde_json::Value>,
    ) -> async_graphql::Result<ChangeResult> {
        put(ctx, kind, &namespace, &name, spec.0, Change::Create).await
    }

    /// Replaces a resource's spec. A Destination's secret fields, which are never shown, keep
    /// their values when the new spec leaves them out.
    async fn update_resource(
        &self,
        ctx: &Context<'_>,
        kind: Kind,
        #[graphql(default = "default")] namespace: String,
        name: String,
        spec: Json<serde_json::Value>,
    ) -> async_graphql::Result<ChangeResult> {
        let mut spec = spec.0;
        if kind == Kind::Destination {
            let current = spec_in_force(ctx, &kind.key(&namespace, &name))?;
            keep_secrets(&mut spec, current.as_ref());
        }
        put(ctx, kind, &namespace, &name, spec, Change::Update).await
    }

    /// Turns a resource off (or back on) and keeps it: `spec.disabled`, or for a Source
    /// `spec.disableInstrumentation`.
    async fn set_disabled(
        &self,
        ctx: &Context<'_>,
        kind: Kind,
        #[graphql(default = "default")] namespace: String,
        name: String,
        disabled: bool,
    ) -> async_graphql::Result<ChangeResult> {
        let key = kind.key(&namespace, &name);
        let Some(mut spec) = spec_in_force(ctx, &key)? else {
            return Ok(ChangeResult::refused(&key, Refusal::Missing(key.clone())));
        };
        let field = match kind {
            Kind::Source => "disableInstrumentation",
            _ => "disabled",
        };
        if let Some(fields) = spec.as_object_mut() {
            fields.insert(field.into(), disabled.into());
        }
        put(ctx, kind, &namespace, &name, spec, Change::Update).await
    }

    /// Builds the exporters a Destination becomes, as the gateway would, and sends one empty
    /// export to each: whether it can be reached and takes data, in the exporter's own words.
    /// Nothing is saved. A secret field left out takes the value of the Destination of that
    /// name.
    async fn test_destination(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = "default")] namespace: String,
        name: String,
        spec: Json<serde_json::Value>,
    ) -> async_graphql::Result<DestinationTest> {
        if backend(ctx).read_only {
            return Err(READ_ONLY.into());
        }
        let (_, store) = plane(ctx)?;
        let key = Kind::Destination.key(&namespace, &name);
        let mut spec = spec.0;
        keep_secrets(&mut spec, spec_in_force(ctx, &key)?.as_ref());
        let object = match object_of(Kind::Destination, &namespace, &name, spec) {
            Ok(object) => object,
            Err(refused) => return Ok(DestinationTest::refused(refused.errors)),
        };
        // Validated as a change of it would be, though nothing is changed.
        let catalog = Catalog::builtin();
        let change = Change::Update(object);
        if let Err(refusal) = change.check(catalog) {
            let refused = ChangeResult::refused(&key, refusal);
            return Ok(DestinationTest::refused(refused.errors));
        }
        let Change::Update(resource::Object::Destination(destination)) = &change else {
            unreachable!("object_of reads the kind it is given")
        };
        let snapshot = store.subscribe().borrow().clone();
        // Nothing is written: secret values go into the settings as they are.
        let exporters = match destination_exporters(
            &snapshot.desired,
            catalog,
            &namespace,
            &name,
            destination,
            &mut |secret| secret,
        ) {
            Ok(exporters) => exporters,
            Err(message) => {
                let error = FieldError {
                    field: None,
                    message,
                };
                return Ok(DestinationTest::refused(vec![error]));
            }
        };
        let mut tested = Vec::new();
        for exporter in exporters {
            let settings = odigos_proto::yaml::to_string(&exporter.config);
            let signals: Vec<_> = exporter
                .signals
                .iter()
                .filter_map(|s| odigos_proto::Signal::parse(s.pipeline()))
                .collect();
            let probe = odigos_collector::exporter::probe(
                &exporter.kind,
                &exporter.id,
                &settings,
                &signals,
            );
            let error = match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(error),
                Err(_) => Some(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
            };
            tested.push(ExporterTest {
                id: exporter.id,
                signals: signals.iter().map(|s| s.to_string()).collect(),
                error,
            });
        }
        Ok(DestinationTest {
            ok: tested.iter().all(|t| t.error.is_none()),
            errors: Vec::new(),
            exporters: tested,
        })
    }

    /// Deletes a resource.
    async fn delete_resource(
        &self,
        ctx: &Context<'_>,
        kind: Kind,
        #[graphql(default = "default")] namespace: String,
        name: String,
    ) -> async_graphql::Result<ChangeResult> {
        apply(ctx, Change::Delete(kind.key(&namespace, &name))).await
    }
}

/// The rollout of the config each role and workload is meant to run now.
fn rollouts_now(plane: &ControlPlane, fleet: &Fleet) -> Vec<Rollout> {
    let hashes = plane.hashes();
    let records = plane.rollouts();
    let agents = fleet.briefs(&[]);
    hashes
        .iter()
        .map(|(target, hash)| {
            let record = records.iter().rev().find(|r| r.target == *target).cloned();
            Rollout::new(target, hash, record, false).counted_now(&agents)
        })
        .collect()
}

/// The spec in force of a resource, as JSON.
fn spec_in_force(
    ctx: &Context<'_>,
    key: &ObjectKey,
) -> async_graphql::Result<Option<serde_json::Value>> {
    let (_, store) = plane(ctx)?;
    Ok(store
        .subscribe()
        .borrow()
        .desired
        .get(key)
        .map(|o| o.spec()))
}

/// Reads the resource `spec` describes and makes it (`Change::Create`) or its new version
/// (`Change::Update`) through the store.
async fn put(
    ctx: &Context<'_>,
    kind: Kind,
    namespace: &str,
    name: &str,
    spec: serde_json::Value,
    change: fn(resource::Object) -> Change,
) -> async_graphql::Result<ChangeResult> {
    match object_of(kind, namespace, name, spec) {
        Ok(object) => apply(ctx, change(object)).await,
        Err(refused) => Ok(refused),
    }
}

/// Makes `change` through the store, or says why not.
async fn apply(ctx: &Context<'_>, change: Change) -> async_graphql::Result<ChangeResult> {
    if backend(ctx).read_only {
        return Err(READ_ONLY.into());
    }
    let (plane, store) = plane(ctx)?;
    let key = change.key();
    Ok(match store.change(change).await {
        Ok(()) => {
            // What the caller reads next shows the change.
            let generation = store.subscribe().borrow().generation;
            let reconciled = plane.reconciled(generation);
            let _ = tokio::time::timeout(Duration::from_secs(5), reconciled).await;
            ChangeResult {
                ok: true,
                resource: key.to_string(),
                errors: Vec::new(),
            }
        }
        Err(refusal) => ChangeResult::refused(&key, refusal),
    })
}

/// The resource a mutation describes, read like a YAML document would be.
fn object_of(
    kind: Kind,
    namespace: &str,
    name: &str,
    spec: serde_json::Value,
) -> Result<resource::Object, ChangeResult> {
    let key = kind.key(namespace, name);
    let document = serde_json::json!({
        "apiVersion": resource::API_VERSION,
        "kind": kind.name(),
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    });
    resource::Object::from_value(odigos_proto::yaml::to_value(&document))
        .map_err(|error| ChangeResult::refused(&key, Refusal::Invalid(key.clone(), vec![error])))
}

/// Copies into `spec.data` the secret fields of `current.data` that it leaves out, and
/// `current.secretRef` (where a cluster keeps them) when it names none.
fn keep_secrets(spec: &mut serde_json::Value, current: Option<&serde_json::Value>) {
    let Some(current) = current else { return };
    if let (Some(fields), Some(reference)) = (spec.as_object_mut(), current.get("secretRef")) {
        fields
            .entry("secretRef")
            .or_insert_with(|| reference.clone());
    }
    let catalog = Catalog::builtin();
    let Some(kind) = current["type"].as_str().and_then(|t| catalog.get(t)) else {
        return;
    };
    let Some(old) = current["data"].as_object() else {
        return;
    };
    let Some(fields) = spec.as_object_mut() else {
        return;
    };
    let data = fields
        .entry("data")
        .or_insert_with(|| serde_json::json!({}));
    let Some(data) = data.as_object_mut() else {
        return;
    };
    for (key, value) in old {
        if kind.field(key).is_some_and(|f| f.secret) && !data.contains_key(key) {
            data.insert(key.clone(), value.clone());
        }
    }
}

/// The resource in force of `kind` named `namespace/name`.
fn in_force(desired: &store::Desired, kind: &str, name: &str) -> Option<resource::Object> {
    let (namespace, name) = split(name);
    let key = ObjectKey {
        kind: resource::KINDS.iter().find(|(_, k)| *k == kind)?.1,
        namespace,
        name,
    };
    desired.get(&key)
}

/// The YAML document in force of a resource named `namespace/name`.
fn document(desired: &store::Desired, kind: &str, name: &str) -> Option<String> {
    in_force(desired, kind, name).map(|object| object.to_yaml())
}

/// The spec in force of a resource named `namespace/name`, as JSON.
fn spec_of(desired: &store::Desired, kind: &str, name: &str) -> Option<Json<serde_json::Value>> {
    in_force(desired, kind, name).map(|object| Json(object.spec()))
}

fn split(name: &str) -> (String, String) {
    let (namespace, name) = name
        .split_once('/')
        .unwrap_or((resource::DEFAULT_NAMESPACE, name));
    (namespace.to_string(), name.to_string())
}

pub struct SubscriptionRoot;

#[Subscription]
impl SubscriptionRoot {
    /// The fleet's counts, pushed when an agent arrives or leaves, reports on its config, or
    /// its health changes (at most every 250 ms; what happens between is folded in).
    async fn fleet_changed(&self, ctx: &Context<'_>) -> impl Stream<Item = FleetSummary> {
        let fleet = backend(ctx).fleet.clone();
        let changes = fleet.changes();
        futures_util::stream::unfold(
            (fleet, changes, true),
            |(fleet, mut changes, first)| async move {
                if !first {
                    changes.changed().await.ok()?;
                    tokio::time::sleep(PUSH_EVERY).await;
                    changes.mark_unchanged();
                }
                let summary = FleetSummary::of(&fleet.briefs(&[]));
                Some((summary, (fleet, changes, false)))
            },
        )
    }

    /// The rollout of each role's and workload's current config, pushed when a new desired
    /// state is assigned or an agent reports on its config (at most every 250 ms).
    async fn rollouts_changed(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = Vec<Rollout>> + use<>> {
        let plane = plane(ctx)?.0.clone();
        let fleet = backend(ctx).fleet.clone();
        let watched = (fleet.changes(), plane.generations());
        Ok(futures_util::stream::unfold(
            (plane, fleet, watched, true),
            |(plane, fleet, (mut changes, mut generations), first)| async move {
                if !first {
                    tokio::select! {
                        changed = changes.changed() => changed.ok()?,
                        changed = generations.changed() => changed.ok()?,
                    }
                    tokio::time::sleep(PUSH_EVERY).await;
                    changes.mark_unchanged();
                    generations.mark_unchanged();
                }
                let rollouts = rollouts_now(&plane, &fleet);
                Some((rollouts, (plane, fleet, (changes, generations), false)))
            },
        ))
    }
}

/// The kinds of resource the API changes.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Source,
    Destination,
    Action,
    InstrumentationRule,
    Sampling,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Source => "Source",
            Kind::Destination => "Destination",
            Kind::Action => "Action",
            Kind::InstrumentationRule => "InstrumentationRule",
            Kind::Sampling => "Sampling",
        }
    }

    fn key(self, namespace: &str, name: &str) -> ObjectKey {
        ObjectKey {
            kind: self.name(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

/// What became of a change: made, or refused with the fields at fault.
#[derive(SimpleObject)]
pub struct ChangeResult {
    ok: bool,
    /// `Kind namespace/name`.
    resource: String,
    /// Why it was refused; nothing was changed.
    errors: Vec<FieldError>,
}

impl ChangeResult {
    fn refused(key: &ObjectKey, refusal: Refusal) -> ChangeResult {
        let errors = match refusal {
            Refusal::Invalid(_, errors) => errors
                .into_iter()
                .map(|(field, message)| FieldError {
                    field: Some(field).filter(|f| !f.is_empty()),
                    message,
                })
                .collect(),
            other => vec![FieldError {
                field: matches!(other, Refusal::Exists(_) | Refusal::Missing(_))
                    .then(|| "metadata.name".to_string()),
                message: other.to_string(),
            }],
        };
        ChangeResult {
            ok: false,
            resource: key.to_string(),
            errors,
        }
    }
}

/// What `testDestination` found.
#[derive(SimpleObject)]
pub struct DestinationTest {
    /// Every exporter was built and took the empty export.
    ok: bool,
    /// Why the spec itself is refused; nothing was sent.
    errors: Vec<FieldError>,
    exporters: Vec<ExporterTest>,
}

impl DestinationTest {
    fn refused(errors: Vec<FieldError>) -> DestinationTest {
        DestinationTest {
            ok: false,
            errors,
            exporters: Vec::new(),
        }
    }
}

/// One exporter a Destination becomes, and what sending to it said.
#[derive(SimpleObject)]
pub struct ExporterTest {
    /// As in the gateway's config: `KIND/NAMESPACE.NAME`.
    id: String,
    signals: Vec<String>,
    /// The exporter's own error; none when the destination took the export.
    error: Option<String>,
}

#[derive(SimpleObject)]
pub struct FieldError {
    /// The field's path, e.g. `spec.data.OTLP_GRPC_ENDPOINT`.
    field: Option<String>,
    message: String,
}

/// Which agents a query keeps.
#[derive(async_graphql::InputObject, Default)]
pub struct AgentFilter {
    /// `gateway`, `node`, `odiglet`, or `sdk` for an SDK's agent.
    role: Option<String>,
    /// Part of the host name.
    node: Option<String>,
    status: Option<AgentStatus>,
    /// The start of the hash of the config meant for it.
    hash: Option<String>,
}

impl AgentFilter {
    /// Whether it keeps an agent of this role, host name, status and desired config hash.
    fn keeps(
        &self,
        role: &str,
        host: Option<&str>,
        status: AgentStatus,
        hash: Option<&str>,
    ) -> bool {
        self.role.as_deref().is_none_or(|r| role == r)
            && self
                .node
                .as_deref()
                .is_none_or(|n| host.unwrap_or_default().contains(n))
            && self.status.is_none_or(|s| status == s)
            && self
                .hash
                .as_deref()
                .is_none_or(|h| hash.unwrap_or_default().starts_with(h))
    }
}

/// A window of the agents.
#[derive(SimpleObject)]
pub struct AgentPage {
    /// How many agents the filter keeps.
    total: usize,
    /// Every role in the fleet, for the filter's choices.
    roles: std::collections::BTreeSet<String>,
    agents: Vec<Agent>,
}

/// Where an agent stands with the config meant for it.
#[derive(Enum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum AgentStatus {
    /// No config is meant for it.
    Unassigned,
    /// Offered; it has not said anything about it yet.
    Pending,
    Applying,
    Applied,
    Failed,
    /// Not heard from: its connection closed or it timed out.
    Disconnected,
}

pub struct Agent(AgentView);

impl Agent {
    /// Its role, or `sdk` for an agent that names none (an SDK's).
    fn role_of(view: &AgentView) -> &str {
        attribute(view, ROLE).unwrap_or(SDK)
    }

    fn attribute(&self, key: &str) -> Option<&str> {
        attribute(&self.0, key)
    }
}

/// An attribute an agent describes itself with.
fn attribute<'a>(view: &'a AgentView, key: &str) -> Option<&'a str> {
    view.non_identifying
        .get(key)
        .or_else(|| view.identifying.get(key))
        .map(String::as_str)
}

fn desired_hash(agent: &AgentView) -> Option<&str> {
    hash_of(&agent.config)
}

/// The hash of the config meant for an agent.
fn hash_of(config: &ConfigStatus) -> Option<&str> {
    match config {
        ConfigStatus::Unassigned => None,
        ConfigStatus::Pending { hash }
        | ConfigStatus::Applying { hash }
        | ConfigStatus::Applied { hash }
        | ConfigStatus::Failed { hash, .. } => Some(hash),
    }
}

fn status_of(agent: &AgentView) -> AgentStatus {
    status(agent.connected.is_some(), &agent.config)
}

fn status(connected: bool, config: &ConfigStatus) -> AgentStatus {
    if !connected {
        return AgentStatus::Disconnected;
    }
    match config {
        ConfigStatus::Unassigned => AgentStatus::Unassigned,
        ConfigStatus::Pending { .. } => AgentStatus::Pending,
        ConfigStatus::Applying { .. } => AgentStatus::Applying,
        ConfigStatus::Applied { .. } => AgentStatus::Applied,
        ConfigStatus::Failed { .. } => AgentStatus::Failed,
    }
}

#[Object]
impl Agent {
    /// The agent's `instance_uid`, in hex.
    async fn uid(&self) -> &str {
        &self.0.uid
    }

    /// `gateway`, `node`, `odiglet`, or none for an SDK's agent.
    async fn role(&self) -> Option<&str> {
        self.attribute(ROLE)
    }

    /// The host it runs on.
    async fn node(&self) -> Option<&str> {
        self.attribute("host.name")
    }

    /// The instrumented workload it belongs to (`namespace/kind-name`).
    async fn workload(&self) -> Option<&str> {
        self.attribute(WORKLOAD)
    }

    async fn pid(&self) -> Option<u32> {
        self.attribute("process.pid").and_then(|p| p.parse().ok())
    }

    async fn version(&self) -> Option<&str> {
        self.attribute("service.version")
    }

    /// Every attribute it describes itself with.
    async fn attributes(&self) -> Vec<Attribute> {
        let view = &self.0;
        view.identifying
            .iter()
            .chain(&view.non_identifying)
            .map(|(key, value)| Attribute {
                key: key.clone(),
                value: value.clone(),
            })
            .collect()
    }

    /// The OpAMP capabilities it declares, by name.
    async fn capabilities(&self) -> Vec<&'static str> {
        use odigos_proto::opamp::AgentCapabilities;
        (0..u64::BITS)
            .map(|bit| 1u64 << bit)
            .filter(|flag| self.0.capabilities & flag != 0)
            .filter_map(|flag| i32::try_from(flag).ok())
            .filter_map(|flag| AgentCapabilities::try_from(flag).ok())
            .map(|capability| capability.as_str_name())
            .collect()
    }

    async fn status(&self) -> AgentStatus {
        status_of(&self.0)
    }

    /// The hash of the config meant for it.
    async fn desired_hash(&self) -> Option<&str> {
        desired_hash(&self.0)
    }

    /// Why it could not apply that config.
    async fn config_error(&self) -> Option<&str> {
        match &self.0.config {
            ConfigStatus::Failed { error, .. } => Some(error),
            _ => None,
        }
    }

    async fn healthy(&self) -> Option<bool> {
        self.0.healthy
    }

    async fn last_error(&self) -> Option<&str> {
        self.0.last_error.as_deref()
    }

    /// What a collector takes in, delivers and drops, read from its own metrics.
    async fn throughput(&self, ctx: &Context<'_>) -> Option<ItemRates> {
        let rates = backend(ctx).throughput.rates();
        let rate = rates.collectors.get(&self.0.uid)?;
        Some(ItemRates {
            received: rate.received,
            sent: rate.sent,
            failed: rate.failed,
        })
    }

    /// Each component's health, by path (`exporters/otlp/backend`).
    async fn components(&self) -> Vec<Component> {
        self.0
            .components
            .iter()
            .map(|(path, c)| Component {
                path: path.clone(),
                healthy: c.healthy,
                status: c.status.clone(),
                last_error: Some(c.last_error.clone()).filter(|e| !e.is_empty()),
                since: c.since.clone(),
            })
            .collect()
    }

    /// `websocket` or `http` while it is live.
    async fn transport(&self) -> Option<&str> {
        self.0.connected
    }

    /// When it last sent a message (RFC 3339).
    async fn last_seen(&self) -> Option<&str> {
        self.0.last_seen.as_deref()
    }

    /// What it reported of its configs, oldest first (the last 16 changes).
    async fn config_history(&self) -> Vec<ConfigChange> {
        self.0
            .history
            .iter()
            .map(|e| ConfigChange {
                at: e.at.clone(),
                hash: e.hash.clone(),
                status: e.status.to_uppercase(),
                error: e.error.clone(),
            })
            .collect()
    }

    /// The config it says it runs.
    async fn effective_config(&self) -> Vec<ConfigFile> {
        files(&self.0.effective_config)
    }

    /// The config meant for it.
    async fn desired_config(&self, ctx: &Context<'_>) -> Vec<ConfigFile> {
        backend(ctx)
            .fleet
            .desired_config(&self.0.uid)
            .map(|f| files(&f))
            .unwrap_or_default()
    }
}

fn files(map: &std::collections::BTreeMap<String, String>) -> Vec<ConfigFile> {
    map.iter()
        .map(|(name, body)| ConfigFile {
            name: name.clone(),
            body: body.clone(),
        })
        .collect()
}

/// One change in what an agent reported of its config.
#[derive(SimpleObject)]
pub struct ConfigChange {
    /// When (RFC 3339).
    at: String,
    hash: String,
    /// `APPLYING`, `APPLIED` or `FAILED`.
    status: String,
    error: Option<String>,
}

#[derive(SimpleObject)]
pub struct Attribute {
    key: String,
    value: String,
}

#[derive(SimpleObject)]
pub struct Component {
    path: String,
    healthy: bool,
    /// What it says of itself: a receiver where it listens, an exporter its queue.
    status: String,
    last_error: Option<String>,
    since: Option<String>,
}

#[derive(SimpleObject)]
pub struct ConfigFile {
    name: String,
    body: String,
}

/// One role's agents, and what its collectors move.
#[derive(SimpleObject)]
pub struct RoleSummary {
    /// `gateway`, `node`, `odiglet`, or `sdk`.
    role: String,
    summary: FleetSummary,
    /// Summed over its collectors, while their metrics are read.
    throughput: Option<ItemRates>,
}

/// How many agents stand where.
#[derive(SimpleObject, Clone, Default)]
pub struct FleetSummary {
    total: usize,
    applied: usize,
    applying: usize,
    failed: usize,
    disconnected: usize,
    /// Pending or unassigned.
    other: usize,
}

impl FleetSummary {
    fn of(agents: &[AgentBrief]) -> FleetSummary {
        let mut summary = FleetSummary::default();
        for agent in agents {
            summary.total += 1;
            match status(agent.connected, &agent.config) {
                AgentStatus::Applied => summary.applied += 1,
                AgentStatus::Applying => summary.applying += 1,
                AgentStatus::Failed => summary.failed += 1,
                AgentStatus::Disconnected => summary.disconnected += 1,
                AgentStatus::Pending | AgentStatus::Unassigned => summary.other += 1,
            }
        }
        summary
    }
}

/// A status condition: `Ready` (its config is in force) or `Healthy` (data flows).
#[derive(SimpleObject)]
pub struct Condition {
    kind: String,
    /// `True`, `False` or `Unknown`.
    status: String,
    reason: String,
    message: String,
    since: Option<String>,
}

impl From<store::Condition> for Condition {
    fn from(c: store::Condition) -> Condition {
        Condition {
            kind: c.kind.into(),
            status: c.status.into(),
            reason: c.reason,
            message: c.message,
            since: c.since,
        }
    }
}

pub struct Source {
    view: crate::reconciler::SourceView,
    yaml: Option<String>,
    spec: Option<Json<serde_json::Value>>,
    throughput: Option<f64>,
}

#[Object]
impl Source {
    /// `namespace/name`.
    async fn name(&self) -> &str {
        &self.view.name
    }

    /// `Kind name` of what it instruments.
    async fn workload(&self) -> &str {
        &self.view.workload
    }

    async fn disabled(&self) -> bool {
        self.view.disabled
    }

    async fn condition(&self) -> Condition {
        Condition::from(self.view.condition.clone())
    }

    /// Whether its workload's running pods have the SDK environment (`WorkloadRollout`), in a
    /// cluster whose pods the control plane follows.
    async fn rollout(&self) -> Option<Condition> {
        self.view.rollout.clone().map(Condition::from)
    }

    /// The processes odiglet matched to it, with their runtimes.
    async fn processes(&self) -> Vec<Process> {
        self.view
            .processes
            .iter()
            .map(|p| {
                let runtime = p.runtime();
                Process {
                    pid: p.pid.parse().unwrap_or_default(),
                    traced: p.traced,
                    executable: p.executable().to_string(),
                    language: runtime.language,
                    runtime_version: runtime.runtime_version,
                    status: p.status.clone(),
                }
            })
            .collect()
    }

    /// The document in force.
    async fn yaml(&self) -> Option<&str> {
        self.yaml.as_deref()
    }

    /// Its spec in force, as JSON.
    async fn spec(&self) -> Option<&Json<serde_json::Value>> {
        self.spec.as_ref()
    }

    /// Spans, metric points and log records per second that the node collectors take in from
    /// its service, over the last few seconds.
    async fn throughput(&self) -> Option<f64> {
        self.throughput
    }
}

/// What the node collectors take in from a Source's service, per second.
fn source_rate(rates: &Rates, source: &resource::Source) -> f64 {
    let serves = serves(source);
    rates
        .services
        .iter()
        .filter(|(service, _)| serves(service))
        .fold(0.0, |sum, (_, rate)| sum + rate)
}

/// Whether a `service.name` is a Source's: its service name, or one its regex matches.
fn serves(source: &resource::Source) -> impl Fn(&str) -> bool + use<> {
    let (service, regex) = crate::compiler::service_of(source);
    let pattern = regex
        .then(|| regex::Regex::new(&format!("^(?:{service})$")).ok())
        .flatten();
    move |name| match &pattern {
        Some(pattern) => pattern.is_match(name),
        None => name == service,
    }
}

/// What the gateways' exporters of a Destination deliver and drop, per second.
fn destination_rate(rates: &Rates, view: &crate::reconciler::DestinationView) -> Option<ItemRates> {
    let Some(crate::compiler::DestinationPlan::Active { exporters, .. }) = &view.plan else {
        return None;
    };
    let mut total = ItemRates::default();
    for rate in exporters.iter().filter_map(|e| rates.exporters.get(e)) {
        total.sent += rate.sent;
        total.failed += rate.failed;
    }
    Some(total)
}

#[derive(SimpleObject)]
pub struct ServiceRate {
    /// Empty for data whose resource has no `service.name`.
    service: String,
    /// Items per second.
    items: f64,
    /// The Source (`namespace/name`) it is the service of, if any.
    source: Option<String>,
}

/// Items per second, over the last few seconds.
#[derive(SimpleObject, Default, Clone)]
pub struct ItemRates {
    /// Taken in (a collector's receivers).
    received: f64,
    /// Delivered (exporters).
    sent: f64,
    /// Dropped after sending failed.
    failed: f64,
}

#[derive(SimpleObject)]
pub struct Process {
    pid: u32,
    traced: bool,
    executable: String,
    language: Option<String>,
    runtime_version: Option<String>,
    /// As odiglet reports it: `EXE (LANG VERSION): service S, Source NS/NAME, traced`.
    status: String,
}

pub struct Destination {
    view: crate::reconciler::DestinationView,
    data: Vec<Attribute>,
    throughput: Option<ItemRates>,
}

#[Object]
impl Destination {
    /// `namespace/name`.
    async fn name(&self) -> &str {
        &self.view.name
    }

    /// Its catalog type, e.g. `otlp`.
    async fn destination_type(&self) -> &str {
        &self.view.destination_type
    }

    /// As the spec names them: `TRACES`, `METRICS`, `LOGS`.
    async fn signals(&self) -> Vec<String> {
        self.view.signals.iter().map(|s| s.to_uppercase()).collect()
    }

    /// Whether its config is in force.
    async fn condition(&self) -> Condition {
        Condition::from(self.view.condition.clone())
    }

    /// Whether data reaches it, while it is in use.
    async fn health(&self) -> Option<Condition> {
        self.view.health.clone().map(Condition::from)
    }

    /// Its fields, without the secret ones.
    async fn data(&self) -> &[Attribute] {
        &self.data
    }

    /// What the gateways deliver to it and drop, while it is in use.
    async fn throughput(&self) -> Option<&ItemRates> {
        self.throughput.as_ref()
    }
}

#[derive(SimpleObject)]
pub struct DestinationType {
    name: String,
    display_name: String,
    /// `managed` or `self hosted`.
    category: String,
    /// As the spec names them: `TRACES`, `METRICS`, `LOGS`.
    signals: Vec<String>,
    fields: Vec<Field>,
}

/// A field of a destination's form.
#[derive(SimpleObject)]
pub struct Field {
    name: String,
    display_name: String,
    /// `string`, `url`, `number`, `boolean`, `select`, `headers`, `list` or `pem`.
    kind: String,
    required: bool,
    /// Written, never shown again.
    secret: bool,
    tooltip: Option<String>,
    /// The choices of a `select`.
    values: Vec<String>,
    default: Option<String>,
}

/// An Action, InstrumentationRule or Sampling.
#[derive(SimpleObject)]
pub struct Resource {
    kind: String,
    /// `namespace/name`.
    name: String,
    condition: Condition,
    /// The document in force.
    yaml: Option<String>,
    /// Its spec in force, as JSON.
    spec: Option<Json<serde_json::Value>>,
}

#[derive(SimpleObject)]
pub struct CollectorsGroup {
    name: String,
    /// `CLUSTER_GATEWAY` or `NODE_COLLECTOR`.
    role: String,
    /// Every collector of the role runs its config.
    ready: bool,
    /// The signals its receivers take.
    signals: Vec<String>,
    /// Replicas, requests and limits.
    resources: Json<serde_json::Value>,
}

#[derive(SimpleObject)]
pub struct Problem {
    /// The file, or `kind namespace/name` in a cluster.
    source: String,
    line: Option<usize>,
    resource: Option<String>,
    field: Option<String>,
    message: String,
}

impl From<store::Problem> for Problem {
    fn from(p: store::Problem) -> Problem {
        Problem {
            source: p.source,
            line: p.line,
            resource: p.resource,
            field: p.field,
            message: p.message,
        }
    }
}

/// One role's or workload's config and how far its agents are with it.
#[derive(SimpleObject)]
pub struct Rollout {
    /// `gateway`, `node`, `odiglet`, or a workload.
    target: String,
    hash: String,
    /// The generation of the desired state that made it, when and with what changes.
    generation: Option<u64>,
    at: Option<String>,
    /// The config it replaced.
    previous: Option<String>,
    /// `Destination default/x created` (`changed`, `deleted`).
    changes: Vec<String>,
    /// A later rollout of the same target replaced it.
    superseded: bool,
    agents: usize,
    applied: usize,
    /// Offered or being applied.
    pending: usize,
    failed: usize,
    /// The failing agents, each with its error.
    errors: Vec<AgentError>,
}

#[derive(SimpleObject)]
pub struct AgentError {
    uid: String,
    error: String,
}

impl Rollout {
    fn new(target: &str, hash: &str, record: Option<RolloutRecord>, superseded: bool) -> Rollout {
        let record = record.filter(|r| r.hash == hash);
        Rollout {
            target: target.to_string(),
            hash: hash.to_string(),
            generation: record.as_ref().map(|r| r.generation),
            at: record.as_ref().map(|r| r.at.clone()),
            previous: record.as_ref().and_then(|r| r.previous.clone()),
            changes: record.map(|r| r.changes).unwrap_or_default(),
            superseded,
            agents: 0,
            applied: 0,
            pending: 0,
            failed: 0,
            errors: Vec::new(),
        }
    }

    fn fail(&mut self, uid: String, error: &str) {
        self.failed += 1;
        self.errors.push(AgentError {
            uid,
            error: error.to_string(),
        });
    }

    /// Counts the connected agents the config is meant for, by where they are with it.
    fn counted_now(mut self, agents: &[AgentBrief]) -> Rollout {
        for agent in agents.iter().filter(|a| a.connected) {
            if hash_of(&agent.config) != Some(&self.hash) {
                continue;
            }
            self.agents += 1;
            match &agent.config {
                ConfigStatus::Applied { .. } => self.applied += 1,
                ConfigStatus::Failed { error, .. } => self.fail(hex(&agent.uid), error),
                _ => self.pending += 1,
            }
        }
        self
    }

    /// For a config a later one replaced: counts the agents whose history shows they applied
    /// or failed it.
    fn counted_by_history(mut self, agents: &[AgentView]) -> Rollout {
        for agent in agents {
            let mut mine = agent.history.iter().rev().filter(|e| e.hash == self.hash);
            let Some(event) = mine.find(|e| e.status != "applying") else {
                continue;
            };
            self.agents += 1;
            match event.status {
                "applied" => self.applied += 1,
                _ => self.fail(agent.uid.clone(), event.error.as_deref().unwrap_or("")),
            }
        }
        self
    }
}
