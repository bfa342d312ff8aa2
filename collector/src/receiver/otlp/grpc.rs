//! OTLP/gRPC: the three export services, served by hand over raw bytes so requests are
//! validated but not decoded.

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use bytes::Bytes;
use odigos_proto::codec::RawCodec;
use odigos_proto::{Signal, rpc};
use prost::Message;
use tonic::body::Body;
use tonic::codec::CompressionEncoding;
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use super::{GrpcConfig, Ingest, IngestError, OtlpConfig};
use crate::receiver::{Server, Socket, listen};

/// Binds a Unix socket at `path`, replacing a socket left there by a process that is gone.
fn listen_unix(path: &Path) -> Result<tokio::net::UnixListener, String> {
    use std::os::unix::fs::FileTypeExt;
    let stale = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
        && std::os::unix::net::UnixStream::connect(path).is_err();
    if stale {
        let _ = std::fs::remove_file(path);
    }
    tokio::net::UnixListener::bind(path)
        .map_err(|e| format!("cannot listen on {}: {e}", path.display()))
}

/// How long a refused client is asked to wait before retrying.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Starts serving on `endpoint` with `config`'s server settings, on `socket` when a server
/// with other settings hands its socket over, else on a new one.
pub(super) async fn start(
    endpoint: &str,
    config: &GrpcConfig,
    socket: Option<Socket>,
    ingest: Ingest,
    settings: Arc<ArcSwap<OtlpConfig>>,
) -> Result<Server, String> {
    let handler = Handler {
        ingest: Arc::new(ingest),
        settings,
    };
    // Windows sized for the large batches an upstream collector sends.
    let mut builder = tonic::transport::Server::builder()
        .initial_stream_window_size(Some(2 << 20))
        .initial_connection_window_size(Some(8 << 20));
    if config.max_concurrent_streams > 0 {
        builder = builder.max_concurrent_streams(config.max_concurrent_streams);
    }
    if let Some(parameters) = config
        .keepalive
        .as_ref()
        .and_then(|k| k.server_parameters.as_ref())
    {
        if let Some(age) = parameters.max_connection_age {
            builder = builder.max_connection_age(age);
        }
        if let Some(grace) = parameters.max_connection_age_grace {
            builder = builder.max_connection_age_grace(grace);
        }
        builder = builder
            .http2_keepalive_interval(parameters.time)
            .http2_keepalive_timeout(parameters.timeout);
    }
    let router = builder
        .add_service(Export::<Traces>::new(handler.clone()))
        .add_service(Export::<Metrics>::new(handler.clone()))
        .add_service(Export::<Logs>::new(handler));
    if let Some(path) = endpoint.strip_prefix("unix:") {
        let (listener, handed_over) = match socket {
            Some(Socket::Unix(listener, handed_over)) => {
                handed_over.store(true, Ordering::Release);
                (listener, Arc::new(AtomicBool::new(false)))
            }
            _ => (
                listen_unix(Path::new(path))?
                    .into_std()
                    .map_err(|e| e.to_string())?,
                Arc::new(AtomicBool::new(false)),
            ),
        };
        let kept = Socket::Unix(
            listener.try_clone().map_err(|e| e.to_string())?,
            handed_over.clone(),
        );
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let listener = tokio::net::UnixListener::from_std(listener).map_err(|e| e.to_string())?;
        tracing::info!(local = %endpoint, "otlp grpc receiver listening");
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        let path = path.to_owned();
        let server = Server::spawn("grpc", endpoint, endpoint.into(), |shutdown| async move {
            let served = router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await;
            // A successor serving on this socket keeps its file.
            if !handed_over.load(Ordering::Acquire) {
                let _ = std::fs::remove_file(path);
            }
            served
        });
        return Ok(server.with_socket(kept));
    }
    let listener = match socket {
        Some(Socket::Tcp(listener)) => listener,
        _ => listen(endpoint)
            .await?
            .into_std()
            .map_err(|e| e.to_string())?,
    };
    let kept = Socket::Tcp(listener.try_clone().map_err(|e| e.to_string())?);
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| e.to_string())?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tracing::info!(%local, "otlp grpc receiver listening");
    let server = Server::spawn("grpc", endpoint, local.to_string(), |shutdown| {
        router.serve_with_incoming_shutdown(incoming, shutdown)
    });
    Ok(server.with_socket(kept))
}

#[derive(Clone)]
struct Handler {
    ingest: Arc<Ingest>,
    settings: Arc<ArcSwap<OtlpConfig>>,
}

impl Handler {
    fn max_size(&self) -> usize {
        let settings = self.settings.load();
        settings
            .protocols
            .grpc
            .as_ref()
            .map_or(4, |g| g.max_recv_msg_size_mib)
            << 20
    }
}

/// One OTLP export service; `S` fixes the signal and the gRPC service name.
struct Export<S> {
    handler: Handler,
    signal: PhantomData<S>,
}

impl<S> Clone for Export<S> {
    fn clone(&self) -> Self {
        Export {
            handler: self.handler.clone(),
            signal: PhantomData,
        }
    }
}

impl<S> Export<S> {
    fn new(handler: Handler) -> Self {
        Export {
            handler,
            signal: PhantomData,
        }
    }
}

trait ServiceSignal: Send + Sync + 'static {
    const SIGNAL: Signal;
    const NAME: &'static str;
}

struct Traces;
struct Metrics;
struct Logs;

impl ServiceSignal for Traces {
    const SIGNAL: Signal = Signal::Traces;
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}
impl ServiceSignal for Metrics {
    const SIGNAL: Signal = Signal::Metrics;
    const NAME: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
}
impl ServiceSignal for Logs {
    const SIGNAL: Signal = Signal::Logs;
    const NAME: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
}

impl<S: ServiceSignal> NamedService for Export<S> {
    const NAME: &'static str = S::NAME;
}

impl<S: ServiceSignal> tower_service::Service<http::Request<Body>> for Export<S> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let handler = self.handler.clone();
        Box::pin(async move {
            if req.uri().path() != S::SIGNAL.grpc_path() {
                return Ok(
                    Status::unimplemented(format!("no method {}", req.uri().path())).into_http(),
                );
            }
            let mut grpc = Grpc::new(RawCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .max_decoding_message_size(handler.max_size());
            Ok(grpc
                .unary(
                    Unary::<S> {
                        handler,
                        signal: PhantomData,
                    },
                    req,
                )
                .await)
        })
    }
}

struct Unary<S> {
    handler: Handler,
    signal: PhantomData<S>,
}

impl<S: ServiceSignal> UnaryService<Bytes> for Unary<S> {
    type Response = Bytes;
    type Future = BoxFuture<Result<Response<Bytes>, Status>>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let ingest = self.handler.ingest.clone();
        Box::pin(async move {
            match ingest.encoded(S::SIGNAL, request.into_inner()).await {
                // An empty Export*ServiceResponse: full success.
                Ok(()) => Ok(Response::new(Bytes::new())),
                Err(IngestError::Invalid(message)) => Err(Status::invalid_argument(message)),
                Err(IngestError::Unsupported(signal)) => Err(Status::unimplemented(format!(
                    "this receiver feeds no {signal} pipeline"
                ))),
                // OTLP clients retry RESOURCE_EXHAUSTED only when told when to: RetryInfo.
                Err(IngestError::Exhausted(message)) => {
                    let code = tonic::Code::ResourceExhausted;
                    let details = rpc::Status::retry_after(code as i32, &message, RETRY_AFTER);
                    Err(Status::with_details(
                        code,
                        message,
                        details.encode_to_vec().into(),
                    ))
                }
                Err(IngestError::Rejected(message)) => Err(Status::internal(message)),
            }
        })
    }
}
