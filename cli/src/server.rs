//! `odigos server`: the control plane: the OpAMP server and its HTTP API, and with
//! `--kubernetes` the desired state of a cluster kept in force across the fleet.

use std::process::ExitCode;
use std::time::Duration;

use odigos_server::compiler::Layout;
use odigos_server::http::{Options, Server};
use odigos_server::opamp::PATH;
use odigos_server::store::{CollectorWorkloads, KubeStore, WebhookCert};

#[derive(clap::Args)]
pub struct Args {
    /// Where agents connect (OpAMP over WebSocket or HTTP, at /v1/opamp) and the API is served.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:4320")]
    listen: String,

    /// Bearer token agents and API clients must present.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "ODIGOS_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,

    /// Serve TLS with this PEM certificate chain (with --tls-key); agents then use wss://.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,

    /// An agent not heard from for this long is considered gone.
    #[arg(long, value_name = "DURATION", default_value = "90s", value_parser = odigos_collector::config::parse_duration)]
    agent_timeout: Duration,

    /// Take the desired state from the odigos.io resources of a Kubernetes cluster ($KUBECONFIG,
    /// ~/.kube/config, or the cluster this runs in), keep the collectors' configs in line with
    /// it, and write status conditions, InstrumentationConfigs and CollectorsGroups back.
    #[arg(long)]
    kubernetes: bool,

    /// With --kubernetes: follow only this namespace [default: all].
    #[arg(long, value_name = "NAMESPACE", requires = "kubernetes")]
    namespace: Option<String>,

    /// With --kubernetes: where CollectorsGroups are written.
    #[arg(long, value_name = "NAMESPACE", default_value = "odigos-system")]
    home_namespace: String,

    /// With --kubernetes: serve the pod webhook here (HOST:PORT), over TLS with
    /// --webhook-cert and --webhook-key: pods of instrumented workloads get the OpenTelemetry
    /// SDK environment as they are created (the chart registers it with the API server).
    #[arg(long, value_name = "HOST:PORT", requires_all = ["kubernetes", "webhook_cert", "webhook_key"])]
    webhook: Option<String>,

    /// The webhook's PEM certificate chain.
    #[arg(long, value_name = "FILE", requires = "webhook")]
    webhook_cert: Option<std::path::PathBuf>,

    /// The PEM private key of --webhook-cert.
    #[arg(long, value_name = "FILE", requires = "webhook")]
    webhook_key: Option<std::path::PathBuf>,

    /// With --webhook: odiglet relays the SDKs' OpAMP on this port of every node (its
    /// --sdk-opamp), and the webhook gives pods `ODIGOS_OPAMP_SERVER_HOST=<node IP>:PORT`.
    #[arg(long, value_name = "PORT", requires = "webhook")]
    sdk_opamp_port: Option<u16>,

    /// With --webhook: keep its certificate renewed in this `kubernetes.io/tls` Secret of
    /// --home-namespace (the one --webhook-cert and --webhook-key are mounted from): when a
    /// third of its life is left, the leader puts a new one there, valid a year, and has
    /// --webhook-configuration trust it. Without it, the certificate is yours to renew; the
    /// webhook serves the files' new contents within seconds either way.
    #[arg(long, value_name = "SECRET", requires_all = ["webhook", "webhook_configuration"])]
    webhook_cert_secret: Option<String>,

    /// The MutatingWebhookConfiguration whose caBundle --webhook-cert-secret keeps trusted.
    #[arg(long, value_name = "NAME", requires = "webhook_cert_secret")]
    webhook_configuration: Option<String>,

    /// With --kubernetes: replicas elect a leader with the Lease `odigos-control-plane` in
    /// --home-namespace; all serve OpAMP and the UI, only the leader writes to the cluster.
    #[arg(long, requires = "kubernetes")]
    leader_elect: bool,

    /// With --kubernetes: the control plane's own Deployment in --home-namespace; what the
    /// control plane creates there is owned by it, so that uninstalling it removes them.
    #[arg(long, value_name = "NAME", requires = "kubernetes")]
    owner_deployment: Option<String>,

    /// With --kubernetes: run the collectors in the cluster from this image (the control
    /// plane's own), in --home-namespace and sized by their CollectorsGroups: the gateway as the
    /// Deployment `odigos-gateway` with its Service and a HorizontalPodAutoscaler, and once it
    /// is ready the node collectors as the DaemonSet `odigos-data-collection`. Without it,
    /// collectors are run by hand with `odigos collector --role ROLE --opamp-endpoint`.
    #[arg(long, value_name = "IMAGE", requires = "kubernetes")]
    collector_image: Option<String>,

    /// With --collector-image: its pull policy.
    #[arg(long, value_name = "POLICY", default_value = "IfNotPresent")]
    image_pull_policy: String,

    /// With --collector-image: the Secret in --home-namespace whose key `token` the
    /// collectors present to the OpAMP server.
    #[arg(long, value_name = "NAME", default_value = "odigos-token")]
    token_secret: String,

    /// With --collector-image: the control plane's Service in --home-namespace, through which
    /// the collectors reach the OpAMP server.
    #[arg(long, value_name = "NAME", default_value = "odigos-control-plane")]
    control_plane_service: String,

    /// With --kubernetes: how node collectors reach the gateway [with --collector-image: the
    /// address of the gateway's Service].
    #[arg(
        long,
        value_name = "URL",
        default_value = "http://odigos-gateway.odigos-system:4317"
    )]
    gateway_endpoint: String,

    /// With --kubernetes: where secret values are written for the gateway to read; the
    /// gateway must see this directory at the same path. With --collector-image, the
    /// directory in the gateway pods: they get the values over OpAMP and write them there.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/odigos/secrets")]
    secrets_dir: std::path::PathBuf,

    /// With --kubernetes: where gateways keep each destination's queue on disk (a volume
    /// that outlives the pod); without it, destination queues are in memory.
    #[arg(long, value_name = "DIR")]
    queue_dir: Option<std::path::PathBuf>,

    /// With --kubernetes: how big the collectors are, as Odigos's sizing presets say: CPU and
    /// memory limits of each gateway / node collector, and the gateway's replicas: size_s
    /// 300m, 300Mi / 300m, 300Mi, 1-5 gateways; size_m 1000m, 600Mi / 500m, 500Mi, 2-8;
    /// size_l 1250m, 850Mi / 750m, 750Mi, 3-12.
    #[arg(long, value_name = "PRESET", default_value = "size_s")]
    sizing: odigos_server::compiler::Sizing,

    /// Disk each destination's queue may use, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 256)]
    queue_mib: u64,

    #[command(flatten)]
    ui: Ui,
}

/// Where people look: the UI and its GraphQL API.
#[derive(clap::Args)]
pub struct Ui {
    /// Where the UI and its GraphQL API (at /graphql) listen, or `off`.
    #[arg(
        long = "ui",
        value_name = "HOST:PORT|off",
        default_value = "127.0.0.1:3000"
    )]
    address: String,

    /// Refuse every change made through the UI and its API: people may look, not touch.
    #[arg(long)]
    ui_read_only: bool,
}

impl Ui {
    /// Sets where `options` serve the UI.
    pub fn configure(&self, options: &mut Options) {
        options.ui = (self.address != "off").then(|| self.address.clone());
        options.ui_read_only = self.ui_read_only;
    }
}

pub fn main(args: Args) -> ExitCode {
    crate::init_logs("info");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = runtime.block_on(async {
        let tls = args.tls_cert.zip(args.tls_key);
        let scheme = if tls.is_some() { ("wss", "https") } else { ("ws", "http") };
        let mut options = Options { token: args.token, agent_timeout: args.agent_timeout, tls, ..Options::default() };
        args.ui.configure(&mut options);
        // A store that competes for leadership, to resign as this replica stops.
        let mut candidate = None;
        options.sdk_opamp_port = args.sdk_opamp_port;
        options.webhook = args.webhook.zip(args.webhook_cert).zip(args.webhook_key).map(|((a, c), k)| (a, c, k));
        let started = if args.kubernetes {
            let catalog = odigos_server::catalog::Catalog::builtin();
            let store = match KubeStore::connect(args.namespace.as_deref(), &args.home_namespace, catalog).await {
                Ok(store) => store,
                Err(e) => {
                    eprintln!("error: cannot follow the cluster's odigos.io resources (are the CRDs installed? `odigos crdgen | kubectl apply -f -`): {e}");
                    return ExitCode::from(1);
                }
            };
            // Pods created before their workload's Source lack what the webhook gives.
            if options.webhook.is_some() {
                store.follow_pods();
            }
            if args.leader_elect {
                let identity = format!("{}_{}", crate::managed::host_name(), std::process::id());
                tracing::info!(identity, "competing for the leader Lease");
                store.elect_leader(identity);
                candidate = Some(store.clone());
            }
            if let Some((secret, configuration)) = args.webhook_cert_secret.zip(args.webhook_configuration) {
                store.renew_webhook_cert(WebhookCert { secret, configuration });
            }
            if let Some(owner) = &args.owner_deployment
                && let Err(e) = store.owned_by_deployment(owner).await
            {
                eprintln!("error: cannot read the Deployment {owner} in {} (--owner-deployment): {e}", args.home_namespace);
                return ExitCode::from(1);
            }
            let mut gateway_endpoint = args.gateway_endpoint;
            let runs_collectors = args.collector_image.is_some();
            if let Some(image) = args.collector_image {
                let workloads = CollectorWorkloads {
                    image,
                    pull_policy: args.image_pull_policy,
                    token_secret: args.token_secret,
                    control_plane_service: args.control_plane_service,
                    secrets_dir: args.secrets_dir.clone(),
                };
                match store.run_collectors(workloads).await {
                    Ok(endpoint) => gateway_endpoint = endpoint,
                    Err(e) => {
                        eprintln!("error: cannot run the collectors in {} (--collector-image): {e}", args.home_namespace);
                        return ExitCode::from(1);
                    }
                }
            }
            let layout = Layout {
                node_grpc: "0.0.0.0:4317".into(),
                node_http: "0.0.0.0:4318".into(),
                gateway_listen: "0.0.0.0:4317".into(),
                gateway_endpoint,
                node_metrics: Some("0.0.0.0:8888".into()),
                gateway_metrics: Some("0.0.0.0:8888".into()),
                secrets_dir: args.secrets_dir,
                secrets_in_config: runs_collectors,
                queue_dir: args.queue_dir,
                queue_mib: args.queue_mib,
                gateway: args.sizing.gateway(),
                node: args.sizing.node(),
                pod_metadata: runs_collectors,
                node_storage: runs_collectors.then(|| odigos_server::store::NODE_STORAGE.into()),
            };
            Server::start_control_plane(&args.listen, options, store, layout).await.map(|(server, _)| server)
        } else {
            Server::start(&args.listen, options).await
        };
        let server = match started {
            Ok(server) => server,
            Err(e) => {
                eprintln!("error: cannot start the control plane: {e}");
                return ExitCode::from(1);
            }
        };
        let base = format!("{}://{}", scheme.1, server.address);
        println!("opamp: {}://{}{PATH} (or {base}{PATH} to poll)", scheme.0, server.address);
        println!("agents: curl {base}/api/v1/agents");
        println!("assign a config: curl -X PUT --data-binary @collector.yaml '{base}/api/v1/config?role=node'");
        if let Some(link) = server.login_link() {
            println!("ui: {link}  (a one-time sign-in link; GraphQL at /graphql)");
        }
        // Ctrl-C, or SIGTERM as Kubernetes stops a pod.
        crate::managed::stop_requested(false).await;
        tracing::info!("stopping");
        // Bounded: connections that do not close in time are cut.
        if tokio::time::timeout(Duration::from_secs(10), server.stop()).await.is_err() {
            tracing::warn!("connections still open after 10 s; stopping anyway");
        }
        if let Some(store) = candidate {
            store.resign().await;
        }
        tracing::info!("stopped");
        ExitCode::SUCCESS
    });
    // What still runs (a watcher, a write to the cluster) does not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}
