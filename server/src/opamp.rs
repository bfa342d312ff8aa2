//! The OpAMP server: one path (`/v1/opamp`) for both transports, WebSocket and plain HTTP.
//!
//! [`Fleet`] holds what the server knows of each agent, keyed by `instance_uid` (not by
//! connection), and the configs it should run; the transports only move messages.

mod fleet;
mod http;
mod tls;
mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use fleet::{AgentView, ComponentView, ConfigStatus, Fleet, Selector};

use crate::reconciler::ControlPlane;

/// How the OpAMP server is run.
#[derive(Clone, Debug)]
pub struct Options {
    /// When set, agents and API clients must send `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// An agent not heard from for this long is considered gone.
    pub agent_timeout: Duration,
    /// Requests handled at once over HTTP; more get 503 with Retry-After.
    pub max_concurrent_requests: usize,
    /// Serve TLS (`wss://`, `https://`) with this certificate chain and key, both PEM files.
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            token: None,
            agent_timeout: Duration::from_secs(90),
            max_concurrent_requests: 4096,
            tls: None,
        }
    }
}

/// Wraps `app` so that every request must carry `Authorization: Bearer <token>`: the OpAMP
/// endpoint and the API alike. The token is compared in constant time.
fn guarded(app: axum::Router, token: Option<String>) -> axum::Router {
    use axum::extract::Request;
    use axum::middleware::Next;
    use axum::response::IntoResponse;
    let Some(token) = token else { return app };
    let token: Arc<str> = token.into();
    app.layer(axum::middleware::from_fn(
        move |request: Request, next: Next| {
            let token = token.clone();
            async move {
                let presented = request
                    .headers()
                    .get(axum::http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .unwrap_or_default();
                if bool::from(subtle::ConstantTimeEq::ct_eq(
                    presented.as_bytes(),
                    token.as_bytes(),
                )) {
                    next.run(request).await
                } else {
                    let refused = "missing or wrong bearer token";
                    (axum::http::StatusCode::UNAUTHORIZED, refused).into_response()
                }
            }
        },
    ))
}

/// The OpAMP path.
pub const PATH: &str = "/v1/opamp";

/// Builds the router serving [`PATH`] for `fleet`.
pub fn router(fleet: Arc<Fleet>, options: &Options) -> axum::Router {
    let state = Arc::new(http::Endpoint::new(fleet, options));
    axum::Router::new()
        .route(PATH, axum::routing::any(http::handle))
        .with_state(state)
}

/// A running OpAMP server.
pub struct Server {
    pub fleet: Arc<Fleet>,
    pub address: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Listens on `address` (`host:port`) and serves until [`Server::stop`].
    pub async fn start(address: &str, options: Options) -> std::io::Result<Server> {
        let fleet = Arc::new(Fleet::new(options.agent_timeout));
        Server::serve(address, options, fleet, None).await
    }

    /// Like [`Server::start`], with a control plane that keeps the fleet's configs in line
    /// with the desired state of `store`, and serves its state at `/api/v1/state`.
    pub async fn start_control_plane(
        address: &str,
        options: Options,
        store: Arc<dyn crate::store::Store>,
        layout: crate::compiler::Layout,
    ) -> std::io::Result<(Server, Arc<ControlPlane>)> {
        let fleet = Arc::new(Fleet::new(options.agent_timeout));
        let catalog = crate::catalog::Catalog::builtin();
        let plane = ControlPlane::start(store, fleet.clone(), catalog, layout);
        let server = Server::serve(address, options, fleet, Some(plane.clone())).await?;
        Ok((server, plane))
    }

    async fn serve(
        address: &str,
        options: Options,
        fleet: Arc<Fleet>,
        plane: Option<Arc<ControlPlane>>,
    ) -> std::io::Result<Server> {
        let acceptor = options
            .tls
            .as_ref()
            .map(|(cert, key)| tls::acceptor(cert, key))
            .transpose()?;
        let listener = tokio::net::TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let app = router(fleet.clone(), &options).merge(crate::api::router(fleet.clone(), plane));
        let app = guarded(app, options.token.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let sweeper = fleet.clone();
        let task = tokio::spawn(async move {
            let sweep = async move {
                let mut ticks = tokio::time::interval(Duration::from_secs(5));
                loop {
                    ticks.tick().await;
                    sweeper.sweep();
                }
            };
            let stopped = async {
                let _ = stopped.await;
            };
            let serve = async move {
                match acceptor {
                    Some(acceptor) => tls::serve(listener, acceptor, app, stopped).await,
                    None => {
                        axum::serve(listener, app)
                            .with_graceful_shutdown(stopped)
                            .await
                    }
                }
            };
            tokio::select! {
                result = serve => {
                    if let Err(e) = result {
                        tracing::error!(error = %e, "opamp server failed");
                    }
                }
                _ = sweep => {}
            }
        });
        let tls = options.tls.is_some();
        tracing::info!(%address, path = PATH, tls, "opamp server listening");
        Ok(Server {
            fleet,
            address,
            stop,
            task,
        })
    }

    /// Stops accepting agents and closes every connection.
    pub async fn stop(self) {
        self.fleet.close_all();
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests;
