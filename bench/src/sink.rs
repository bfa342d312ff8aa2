//! A counting OTLP/gRPC traces sink.
//!
//! It validates and counts spans with the wire scanner and acknowledges at once, so it costs
//! little CPU next to the collector under test and never becomes the bottleneck it measures.
//! It accepts gzip and zstd because some senders compress whatever they are configured with.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use bytes::Bytes;
use odigos_proto::Signal;
use odigos_proto::codec::RawCodec;
use odigos_proto::wire;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::body::Body;
use tonic::codec::CompressionEncoding;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// Large enough for any batch a collector under test forwards.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// What the sink has received so far.
#[derive(Debug, Default)]
pub struct Counters {
    requests: AtomicU64,
    spans: AtomicU64,
    invalid: AtomicU64,
    compressed: AtomicU64,
}

impl Counters {
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn spans(&self) -> u64 {
        self.spans.load(Ordering::Relaxed)
    }

    /// Requests rejected because they were not valid OTLP.
    pub fn invalid(&self) -> u64 {
        self.invalid.load(Ordering::Relaxed)
    }

    /// Requests that arrived compressed (gzip or zstd), whatever the sender was told.
    pub fn compressed(&self) -> u64 {
        self.compressed.load(Ordering::Relaxed)
    }

    fn record(&self, body: &[u8], compressed: bool) -> Result<(), Status> {
        match wire::scan(Signal::Traces, body) {
            Ok(scan) => {
                if compressed {
                    self.compressed.fetch_add(1, Ordering::Relaxed);
                }
                self.requests.fetch_add(1, Ordering::Relaxed);
                self.spans.fetch_add(scan.items as u64, Ordering::Relaxed);
                Ok(())
            }
            Err(err) => {
                self.invalid.fetch_add(1, Ordering::Relaxed);
                Err(Status::invalid_argument(err.to_string()))
            }
        }
    }
}

/// A running sink; dropping it stops the server.
#[derive(Debug)]
pub struct Sink {
    addr: SocketAddr,
    counters: Arc<Counters>,
    server: JoinHandle<()>,
}

impl Sink {
    /// Listens on `addr` (port 0 picks a free port) and serves until dropped.
    pub async fn start(addr: SocketAddr) -> anyhow::Result<Sink> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("bind {addr}"))?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let service = {
            let counters = counters.clone();
            tower::service_fn(move |req: http::Request<Body>| {
                let counters = counters.clone();
                async move { Ok::<_, Infallible>(handle(counters, req).await) }
            })
        };
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let server = tokio::spawn(async move {
            let served = tonic::transport::Server::builder().serve_with_incoming(service, incoming);
            if let Err(err) = served.await {
                eprintln!("sink stopped: {err}");
            }
        });
        Ok(Sink {
            addr,
            counters,
            server,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn handle(counters: Arc<Counters>, req: http::Request<Body>) -> http::Response<Body> {
    if req.uri().path() != Signal::Traces.grpc_path() {
        let path = req.uri().path().to_owned();
        return Status::unimplemented(format!("sink serves only traces, not {path}")).into_http();
    }
    let encoding = req.headers().get("grpc-encoding");
    let compressed = encoding.is_some_and(|encoding| encoding != "identity");
    let export = tower::service_fn(move |req: Request<Bytes>| {
        // An empty message is the encoding of an empty ExportTraceServiceResponse.
        let reply = counters
            .record(req.get_ref(), compressed)
            .map(|()| Response::new(Bytes::new()));
        std::future::ready(reply)
    });
    tonic::server::Grpc::new(RawCodec)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .unary(export, req)
        .await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::load::{self, LoadOptions, LoadStats};
    use crate::request::Payloads;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counts_spans_sent_by_the_load_generator() {
        let sink = Sink::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let options = LoadOptions {
            endpoint: format!("http://{}", sink.addr()),
            connections: 2,
            in_flight: 2,
            rate: None,
            duration: Duration::from_millis(500),
        };
        let payloads = Arc::new(Payloads::generate(4, 5));
        let stats = Arc::new(LoadStats::default());
        let run = load::run(&options, payloads, stats.clone());
        let report = tokio::time::timeout(Duration::from_secs(30), run)
            .await
            .expect("load finishes in time")
            .expect("load runs");

        assert_eq!(report.failed, 0, "errors: {:?}", report.errors);
        assert!(report.acked > 0);
        assert_eq!(report.acked % 100, 0);
        assert_eq!(sink.counters().spans(), report.acked);
        assert_eq!(sink.counters().requests() * 100, report.acked);
        assert_eq!(sink.counters().invalid(), 0);
    }

    #[tokio::test]
    async fn accepts_gzip() {
        let sink = Sink::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", sink.addr()))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut grpc = tonic::client::Grpc::new(channel).send_compressed(CompressionEncoding::Gzip);
        grpc.ready().await.unwrap();
        let request = Request::new(Payloads::generate(1, 6).next());
        let path = http::uri::PathAndQuery::from_static(Signal::Traces.grpc_path());
        grpc.unary::<_, Bytes, _>(request, path, RawCodec)
            .await
            .unwrap();

        assert_eq!(sink.counters().spans(), 100);
        assert_eq!(sink.counters().compressed(), 1);
    }

    #[test]
    fn rejects_invalid_protobuf() {
        let counters = Counters::default();
        assert!(counters.record(&[0xff, 0xff], false).is_err());
        assert_eq!(counters.invalid(), 1);
        assert_eq!(counters.spans(), 0);
    }
}
