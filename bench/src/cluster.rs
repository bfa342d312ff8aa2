//! The control plane on a real cluster: Deployments, Sources and Destinations applied at once,
//! the time until every InstrumentationConfig exists and the gateway runs the config with every
//! Destination, with the control plane's peak memory; then the time from an Action's change
//! to its condition saying every collector applied it.
//!
//! Expects odigos-rs installed with the chart in `odigos-system` on the cluster `KUBECONFIG`
//! names (bench/README.md says how on one machine), and runs on a node of it to read the
//! control plane's memory from `/proc`.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{StreamExt, TryStreamExt};
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::control::percentile;
use crate::runner::proc_status_kib;

#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// Deployments applied, each with a Source.
    #[arg(long, default_value_t = 2000)]
    workloads: usize,
    /// Destinations applied with them.
    #[arg(long, default_value_t = 20)]
    destinations: usize,
    /// Action changes timed to applied.
    #[arg(long, default_value_t = 20)]
    applies: usize,
    /// The namespace the benchmark's objects go in, deleted at the end.
    #[arg(long, default_value = "odigos-bench")]
    namespace: String,
    /// How many objects are created at a time.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

fn api(client: &Client, ns: &str, group: &str, version: &str, kind: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    Api::namespaced_with(client.clone(), ns, &resource)
}

pub async fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("no cluster to talk to (set KUBECONFIG)")?;
    let ns = args.namespace.as_str();
    let pid = control_plane_pid().context(
        "no control plane process on this machine (`odigos server --kubernetes`, installed by the chart)",
    )?;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
        )
        .await
        .with_context(|| format!("creating the namespace {ns} (left from a run before?)"))?;
    let result = measure(&client, &args, pid).await;
    namespaces.delete(ns, &DeleteParams::default()).await?;
    // Gone before the next run can make it again.
    let deadline = Instant::now() + Duration::from_secs(180);
    while namespaces.get_opt(ns).await?.is_some() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    result
}

async fn measure(client: &Client, args: &ClusterArgs, pid: u32) -> anyhow::Result<()> {
    let ns = args.namespace.as_str();
    let deployments = api(client, ns, "apps", "v1", "Deployment");
    let sources = api(client, ns, "odigos.io", "v1alpha1", "Source");
    let destinations = api(client, ns, "odigos.io", "v1alpha1", "Destination");
    let configs = api(client, ns, "odigos.io", "v1alpha1", "InstrumentationConfig");
    let actions = api(client, ns, "odigos.io", "v1alpha1", "Action");

    // No replicas: what is measured is the control plane, not the node running pods.
    let mut objects = Vec::new();
    for i in 0..args.workloads {
        let name = format!("app-{i}");
        objects.push((
            &deployments,
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name},
                "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}},
                        "spec": {"containers": [{"name": "app", "image": "localhost/pause:1"}]}}},
            }),
        ));
        objects.push((
            &sources,
            json!({
                "apiVersion": "odigos.io/v1alpha1", "kind": "Source",
                "metadata": {"name": name},
                "spec": {"workload": {"name": name, "namespace": ns, "kind": "Deployment"}},
            }),
        ));
    }
    for i in 0..args.destinations {
        objects.push((
            &destinations,
            json!({
                "apiVersion": "odigos.io/v1alpha1", "kind": "Destination",
                "metadata": {"name": format!("backend-{i}")},
                "spec": {"type": "otlphttp", "signals": ["TRACES"],
                    "data": {"OTLP_HTTP_ENDPOINT": format!("http://127.0.0.1:{}", 20000 + i)}},
            }),
        ));
    }
    let count = objects.len();
    let started = Instant::now();
    futures_util::stream::iter(objects)
        .map(|(api, object)| async move {
            let object: DynamicObject = serde_json::from_value(object)?;
            api.create(&PostParams::default(), &object).await?;
            anyhow::Ok(())
        })
        .buffer_unordered(args.concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    let created = started.elapsed();
    let deadline = Duration::from_secs(300);
    loop {
        let ready = configs
            .list_metadata(&ListParams::default())
            .await?
            .items
            .len();
        let applied = destinations
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|d| ready_at(&d.data, d.metadata.generation))
            .count();
        if ready == args.workloads && applied == args.destinations {
            break;
        }
        if started.elapsed() > deadline {
            bail!(
                "after {deadline:?}: {ready} InstrumentationConfigs, {applied} Destinations applied"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let converged = started.elapsed();
    let peak_mib = proc_status_kib(pid, "VmHWM")? as f64 / 1024.0;

    // One Action changed again and again: from each change to its condition saying the
    // collectors it reaches applied that generation.
    let action = |value: usize| {
        json!({
            "apiVersion": "odigos.io/v1alpha1", "kind": "Action",
            "metadata": {"name": "bench-attribute"},
            "spec": {"signals": ["TRACES"], "addClusterInfo": {"clusterAttributes": [
                {"attributeName": "bench.round", "attributeStringValue": value.to_string()}]}},
        })
    };
    let apply = PatchParams::apply("odigos-bench").force();
    let mut latencies = Vec::new();
    for round in 0..=args.applies {
        let began = Instant::now();
        let written = actions
            .patch("bench-attribute", &apply, &Patch::Apply(&action(round)))
            .await?;
        loop {
            let now = actions.get("bench-attribute").await?;
            if ready_at(&now.data, written.metadata.generation) {
                break;
            }
            if began.elapsed() > Duration::from_secs(60) {
                bail!(
                    "an Action change was not applied within 60 s: {}",
                    now.data["status"]
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The first creates the Action; the changes after it are what is measured.
        if round > 0 {
            latencies.push(began.elapsed());
        }
    }
    latencies.sort();
    let ms = |d: Duration| format!("{:.0}", d.as_secs_f64() * 1000.0);
    println!(
        "| objects created | created in s | every InstrumentationConfig and Destination applied, s | control plane peak RSS MiB | Action change to applied p50 ms | p99 ms |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| {count} ({} Deployments, {} Sources, {} Destinations) | {:.1} | {:.1} | {peak_mib:.0} | {} | {} |",
        args.workloads,
        args.workloads,
        args.destinations,
        created.as_secs_f64(),
        converged.as_secs_f64(),
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
    );
    Ok(())
}

/// Whether an object's `Ready` condition is true for `generation` (or a later one).
fn ready_at(object: &Value, generation: Option<i64>) -> bool {
    object["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| {
            c["type"] == "Ready"
                && c["status"] == "True"
                && c["observedGeneration"].as_i64() >= generation
        })
}

/// The control plane's process on this machine: the pod's processes are this host's.
fn control_plane_pid() -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            (args.get(1) == Some(&&b"server"[..]) && args.contains(&&b"--kubernetes"[..]))
                .then_some(pid)
        })
}
