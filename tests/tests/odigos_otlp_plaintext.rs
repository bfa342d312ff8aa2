//! Odigos's OTLP gRPC Destination as its documentation writes it: a scheme-less
//! `OTLP_GRPC_ENDPOINT` and no `OTLP_GRPC_TLS_ENABLED`, which Odigos sends in plaintext. Under
//! `odigos up`, spans from the Python SDK reach a plaintext OTLP receiver through it.

use std::time::Duration;

use odigos_tests::sdk::Streamer;
use odigos_tests::traffic::{Backend, Mode};
use odigos_tests::up::Up;
use odigos_tests::wait_for;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheme_less_otlp_endpoint_delivers_in_plaintext() {
    let backend = Backend::new(Mode::Up);
    // The documented sample's shape (docs.odigos.io/backends/otlp), pointed at the sink.
    let destination = format!(
        "apiVersion: odigos.io/v1alpha1
kind: Destination
metadata:
  name: otlp-example
spec:
  data:
    OTLP_GRPC_ENDPOINT: \"127.0.0.1:{}\"
  destinationName: otlp
  signals:
  - TRACES
  type: otlp
",
        backend.port
    );
    let up = tokio::task::block_in_place(|| Up::start(&[("otlp.yaml", destination)]));
    let state = tokio::task::block_in_place(|| up.wait_applied(1));
    assert_eq!(
        state["destinations"]["default/otlp-example"]["plan"]["status"], "active",
        "{state:#}"
    );

    let out = tempfile::tempdir().unwrap();
    let sdk = Streamer::python(
        &format!("http://127.0.0.1:{}", up.grpc()),
        "shop",
        10,
        out.path(),
    );
    let delivered = tokio::task::block_in_place(|| {
        wait_for(Duration::from_secs(30), || backend.sink.received() > 20)
    });
    let report = sdk.stop();
    assert!(
        delivered,
        "no spans reached the plaintext sink:\n{report}\n{}",
        up.logs()
    );
    let acked = tokio::task::block_in_place(|| {
        let sdk_acked = lines_of(out.path().join("shop.acked"));
        wait_for(Duration::from_secs(20), || {
            backend.sink.missing(&sdk_acked) == 0
        });
        sdk_acked
    });
    assert!(!acked.is_empty());
    assert_eq!(
        backend.sink.missing(&acked),
        0,
        "acknowledged spans missing at the sink:\n{}",
        up.logs()
    );
}

fn lines_of(path: std::path::PathBuf) -> Vec<String> {
    odigos_tests::lines(&path)
}
