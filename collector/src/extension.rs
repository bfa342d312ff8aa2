//! Extensions: what runs beside the pipelines. Declared under `extensions:` and started by
//! listing them in `service.extensions`, as in otelcol: `health_check`, `pprof` and `zpages`
//! serve HTTP, `file_storage` keeps exporters' sending queues on disk.
//!
//! Extensions follow the topology's two phases like receivers: [`prepare`] opens what a new
//! config needs (a listener on a new endpoint, a storage directory) and can fail without
//! touching what runs; [`Prepared::commit`] switches over. An extension whose endpoint is
//! unchanged keeps its socket; its other settings change in place.

pub mod file_storage;
pub mod health_check;
pub mod pprof;
pub mod zpages;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use arc_swap::{ArcSwap, ArcSwapOption};

use crate::config::{ComponentId, Config, ParseError, parse_component};
use crate::receiver::{self, Server};
use crate::topology::Context;
use crate::yaml::Value;

#[derive(Clone, Debug, PartialEq)]
pub enum ExtensionConfig {
    FileStorage(file_storage::FileStorageConfig),
    HealthCheck(health_check::HealthCheckConfig),
    Pprof(pprof::PprofConfig),
    Zpages(zpages::ZpagesConfig),
}

impl ExtensionConfig {
    pub const KINDS: &[&str] = &["file_storage", "health_check", "pprof", "zpages"];

    pub(crate) fn parse(kind: &str, value: Value) -> Result<Self, ParseError> {
        Ok(match kind {
            "file_storage" => ExtensionConfig::FileStorage(parse_component(value)?),
            "health_check" => ExtensionConfig::HealthCheck(parse_component(value)?),
            "pprof" => ExtensionConfig::Pprof(parse_component(value)?),
            "zpages" => ExtensionConfig::Zpages(parse_component(value)?),
            _ => return Err(ParseError::UnknownType { known: Self::KINDS }),
        })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            ExtensionConfig::FileStorage(_) => "file_storage",
            ExtensionConfig::HealthCheck(_) => "health_check",
            ExtensionConfig::Pprof(_) => "pprof",
            ExtensionConfig::Zpages(_) => "zpages",
        }
    }

    /// The `host:port` it serves HTTP on, for those that do.
    pub fn endpoint(&self) -> Option<String> {
        let endpoint = match self {
            ExtensionConfig::FileStorage(_) => return None,
            ExtensionConfig::HealthCheck(c) => &c.endpoint,
            ExtensionConfig::Pprof(c) => &c.endpoint,
            ExtensionConfig::Zpages(c) => &c.endpoint,
        };
        Some(listen_address(endpoint))
    }
}

/// `:13133` (every interface, as Go writes it) as `0.0.0.0:13133`.
fn listen_address(endpoint: &str) -> String {
    match endpoint.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => endpoint.to_string(),
    }
}

/// Checks an extension's `endpoint`: `host:port`, or `:port`.
pub(crate) fn check_endpoint(endpoint: &str) -> Vec<(Vec<String>, String)> {
    let valid = endpoint
        .rsplit_once(':')
        .is_some_and(|(_, port)| port.parse::<u16>().is_ok());
    if valid {
        Vec::new()
    } else {
        vec![(
            vec!["endpoint".into()],
            format!("invalid endpoint {endpoint:?} (write host:port, e.g. localhost:13133)"),
        )]
    }
}

/// What extensions see of the running collector.
pub struct Status {
    /// Whether the pipelines run: set once a config is in effect, cleared when shutting down.
    ready: AtomicBool,
    pub started: SystemTime,
    /// The config in effect.
    config: ArcSwapOption<Config>,
    /// Where each running extension serves, by id.
    endpoints: ArcSwap<Vec<(String, String)>>,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            ready: AtomicBool::new(false),
            started: SystemTime::now(),
            config: ArcSwapOption::empty(),
            endpoints: ArcSwap::default(),
        }
    }
}

impl Status {
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn config(&self) -> Option<Arc<Config>> {
        self.config.load_full()
    }

    pub(crate) fn set_config(&self, config: &Config) {
        self.config.store(Some(Arc::new(config.clone())));
    }
}

/// A running extension.
pub struct Running {
    pub config: ExtensionConfig,
    settings: Arc<ArcSwap<ExtensionConfig>>,
    server: Option<Server>,
}

impl Running {
    /// Where it serves: `host:port`.
    pub fn local(&self) -> Option<&str> {
        self.server.as_ref().map(|s| s.local.as_str())
    }

    pub async fn stop(self) {
        if let Some(server) = self.server {
            server.stop().await;
        }
    }
}

/// A config made ready for an extension: a new listener open, nothing switched yet.
pub struct Prepared {
    config: ExtensionConfig,
    settings: Arc<ArcSwap<ExtensionConfig>>,
    /// A server started for a new endpoint; `None` keeps the previous one.
    started: Option<Server>,
}

/// Opens what `config` needs that `previous` (the running instance of the same id) does not
/// already have.
pub async fn prepare(
    id: &ComponentId,
    config: &ExtensionConfig,
    previous: Option<&Running>,
    context: &Context,
) -> Result<Prepared, String> {
    let same_kind = previous.filter(|p| p.config.kind() == config.kind());
    if let ExtensionConfig::FileStorage(storage) = config {
        storage.prepare()?;
    }
    let kept = same_kind.filter(|p| {
        p.config.endpoint() == config.endpoint()
            && p.server
                .as_ref()
                .is_some_and(|s| Some(&s.endpoint) == config.endpoint().as_ref())
    });
    if let Some(running) = kept {
        return Ok(Prepared {
            config: config.clone(),
            settings: running.settings.clone(),
            started: None,
        });
    }
    let settings = Arc::new(ArcSwap::from_pointee(config.clone()));
    let Some(endpoint) = config.endpoint() else {
        return Ok(Prepared {
            config: config.clone(),
            settings,
            started: None,
        });
    };
    let listener = receiver::listen(&endpoint).await?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let app = match config {
        ExtensionConfig::HealthCheck(_) => health_check::router(settings.clone(), context),
        ExtensionConfig::Pprof(_) => pprof::router(),
        ExtensionConfig::Zpages(_) => zpages::router(context),
        ExtensionConfig::FileStorage(_) => unreachable!("serves nothing"),
    };
    tracing::info!(%local, "{id} extension listening");
    let server = Server::spawn(config.kind(), &endpoint, local.to_string(), |shutdown| {
        std::future::IntoFuture::into_future(
            axum::serve(listener, app).with_graceful_shutdown(shutdown),
        )
    });
    Ok(Prepared {
        config: config.clone(),
        settings,
        started: Some(server),
    })
}

impl Prepared {
    /// Switches to the new config; returns the running extension and the server it no longer
    /// needs, to be stopped by the caller.
    pub fn commit(self, previous: Option<Running>) -> (Running, Option<Server>) {
        self.settings.store(Arc::new(self.config.clone()));
        let (server, retired) = match (self.started, previous) {
            (Some(started), previous) => (Some(started), previous.and_then(|p| p.server)),
            (None, Some(previous)) if self.config.endpoint().is_some() => (previous.server, None),
            (None, previous) => (None, previous.and_then(|p| p.server)),
        };
        let running = Running {
            config: self.config,
            settings: self.settings,
            server,
        };
        (running, retired)
    }

    /// Undoes the preparation: closes what it opened.
    pub async fn abort(self) {
        if let Some(server) = self.started {
            server.stop().await;
        }
    }
}

/// Records where the running extensions serve, for the status pages.
pub(crate) fn publish_endpoints(
    context: &Context,
    running: &std::collections::BTreeMap<ComponentId, Running>,
) {
    let endpoints = running
        .iter()
        .map(|(id, r)| (id.to_string(), r.local().unwrap_or("-").to_string()))
        .collect();
    context.status.endpoints.store(Arc::new(endpoints));
}

impl Status {
    /// Each running extension's id and where it serves.
    pub fn endpoints(&self) -> Arc<Vec<(String, String)>> {
        self.endpoints.load_full()
    }
}

/// `time` as RFC 3339 in UTC, e.g. `2024-05-01T12:00:00.123Z`.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests;
