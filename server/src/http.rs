//! The control plane's HTTP surface, composed here and nowhere else. It listens twice:
//!
//! - where agents connect (`--listen`): OpAMP at `/v1/opamp`, and the REST API at `/api/v1`;
//! - where people look (`--ui`): the UI, its GraphQL API at `/graphql`, the REST API, and
//!   `/api/v1/session`, which turns a one-time login code (or the token) into a session cookie.
//!
//! One auth layer guards both: `Authorization: Bearer <token>`, or on the UI's side a session
//! cookie, with which anything but a read must also carry the [`CSRF_HEADER`].

mod auth;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::compiler::Layout;
use crate::graphql;
use crate::opamp::{self, Fleet};
use crate::reconciler::ControlPlane;
use crate::store::Store;

pub use auth::CSRF_HEADER;

/// How the control plane serves.
#[derive(Clone, Debug)]
pub struct Options {
    /// When set, agents and API clients must send `Authorization: Bearer <token>`. The UI
    /// always needs it or a session (without one, a token made at start that only its
    /// sign-in links lead to).
    pub token: Option<String>,
    /// An agent not heard from for this long is considered gone.
    pub agent_timeout: Duration,
    /// OpAMP requests handled at once over HTTP; more get 503 with Retry-After.
    pub max_concurrent_requests: usize,
    /// Serve TLS (`wss://`, `https://`) with this certificate chain and key, both PEM files.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Where the UI and its GraphQL API listen (`host:port`); `None` serves no UI.
    pub ui: Option<String>,
    /// Refuse every change through the UI's side: its GraphQL mutations and config pushes.
    pub ui_read_only: bool,
    /// Where the pod webhook listens (`host:port`), over TLS with this certificate chain and
    /// key; only a control plane serves it.
    pub webhook: Option<(String, PathBuf, PathBuf)>,
    /// The port on every node where odiglet relays the SDKs' OpAMP: the webhook gives pods
    /// `ODIGOS_OPAMP_SERVER_HOST` there.
    pub sdk_opamp_port: Option<u16>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            token: None,
            agent_timeout: Duration::from_secs(90),
            max_concurrent_requests: 4096,
            tls: None,
            ui: None,
            ui_read_only: false,
            webhook: None,
            sdk_opamp_port: None,
        }
    }
}

/// A running control plane's listeners.
pub struct Server {
    pub fleet: Arc<Fleet>,
    /// Where agents connect.
    pub address: SocketAddr,
    /// Where the UI is served, if it is.
    pub ui_address: Option<SocketAddr>,
    scheme: &'static str,
    auth: Arc<auth::Auth>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Serves the fleet alone: agents connect at `address` (`host:port`) and get the configs
    /// assigned through the API.
    pub async fn start(address: &str, options: Options) -> std::io::Result<Server> {
        let fleet = Arc::new(Fleet::new(options.agent_timeout));
        Server::serve(address, options, fleet, None).await
    }

    /// Like [`Server::start`], with a control plane that keeps the fleet's configs in line
    /// with the desired state of `store`; the UI and API show that state and change it.
    pub async fn start_control_plane(
        address: &str,
        options: Options,
        store: Arc<dyn Store>,
        layout: Layout,
    ) -> std::io::Result<(Server, Arc<ControlPlane>)> {
        let fleet = Arc::new(Fleet::new(options.agent_timeout));
        let catalog = crate::catalog::Catalog::builtin();
        let plane = ControlPlane::start(store.clone(), fleet.clone(), catalog, layout);
        let server = Server::serve(address, options, fleet, Some((plane.clone(), store))).await?;
        Ok((server, plane))
    }

    async fn serve(
        address: &str,
        options: Options,
        fleet: Arc<Fleet>,
        plane: Option<(Arc<ControlPlane>, Arc<dyn Store>)>,
    ) -> std::io::Result<Server> {
        let acceptor = options
            .tls
            .as_ref()
            .map(|(cert, key)| tls::acceptor(cert, key))
            .transpose()?;
        let auth = Arc::new(auth::Auth::new(options.token.clone()));
        let api = crate::api::router(fleet.clone(), plane.as_ref().map(|(p, _)| p.clone()));

        let agents_side = auth.guard(
            opamp::router(fleet.clone(), options.max_concurrent_requests).merge(api.clone()),
            auth::Side::Agents,
        );
        let listener = tokio::net::TcpListener::bind(address).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("OpAMP and the API cannot listen on {address}: {e}"),
            )
        })?;
        let agents_address = listener.local_addr()?;
        let mut listeners = vec![(listener, agents_side, acceptor.clone())];

        let mut ui_address = None;
        if let Some(ui) = &options.ui {
            let schema = graphql::schema(graphql::Backend {
                fleet: fleet.clone(),
                plane: plane.clone(),
                read_only: options.ui_read_only,
                throughput: crate::throughput::Throughput::start(fleet.clone()),
            });
            let side = auth::Side::People {
                read_only: options.ui_read_only,
            };
            let ui_side = auth.guard(
                graphql::router(schema)
                    .merge(api)
                    .merge(auth.clone().router())
                    .fallback(crate::ui::serve),
                side,
            );
            let listener = tokio::net::TcpListener::bind(ui).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("the UI cannot listen on {ui}: {e} (choose another with --ui HOST:PORT, or --ui off)"))
            })?;
            ui_address = Some(listener.local_addr()?);
            listeners.push((listener, ui_side, acceptor.clone()));
        }

        // The API server calls the webhook over TLS, with no token.
        if let (Some((address, cert, key)), Some((plane, _))) = (&options.webhook, &plane) {
            let webhook_tls = tls::acceptor(cert, key)?;
            let listener = tokio::net::TcpListener::bind(address).await.map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("the pod webhook cannot listen on {address}: {e}"),
                )
            })?;
            tracing::info!(address = %listener.local_addr()?, path = crate::webhook::PATH, "pod webhook listening");
            listeners.push((
                listener,
                crate::webhook::router(plane.clone(), options.sdk_opamp_port),
                Some(webhook_tls),
            ));
        }

        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for (listener, app, acceptor) in listeners {
            let mut stopped = stopped.clone();
            tasks.push(tokio::spawn(async move {
                let stopped = async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                };
                let result = match acceptor {
                    Some(acceptor) => tls::serve(listener, acceptor, app, stopped).await,
                    None => {
                        axum::serve(listener, app)
                            .with_graceful_shutdown(stopped)
                            .await
                    }
                };
                if let Err(e) = result {
                    tracing::error!(error = %e, "the control plane stopped serving");
                }
            }));
        }
        let sweeper = fleet.clone();
        let mut stopped_sweep = stopped.clone();
        tasks.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = ticks.tick() => sweeper.sweep(),
                    _ = stopped_sweep.wait_for(|stop| *stop) => break,
                }
            }
        }));

        let tls = options.tls.is_some();
        tracing::info!(address = %agents_address, path = opamp::PATH, tls, "opamp server listening");
        if let Some(ui) = ui_address {
            tracing::info!(address = %ui, read_only = options.ui_read_only, "ui and graphql listening");
        }
        Ok(Server {
            fleet,
            address: agents_address,
            ui_address,
            scheme: if tls { "https" } else { "http" },
            auth,
            stop,
            tasks,
        })
    }

    /// The UI's address with a fresh one-time login code in its fragment (which browsers
    /// do not send anywhere): opening it signs the browser in.
    pub fn login_link(&self) -> Option<String> {
        let address = self.ui_address?;
        let code = self.auth.login_code();
        Some(format!("{}://{address}/#login={code}", self.scheme))
    }

    /// Stops accepting agents and people, and closes every connection.
    pub async fn stop(self) {
        self.fleet.close_all();
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
