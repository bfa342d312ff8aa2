//! `kill -9` under load with a persistent queue: after a restart, every span the collector had
//! acknowledged is delivered (some may arrive twice; none is missing).

use std::net::SocketAddr;
use std::time::Duration;

use odigos_tests::traffic::{Load, Sink};
use odigos_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_loses_nothing_acknowledged() {
    let (grpc, sink_port) = (free_port(), free_port());
    let queue = tempfile::tempdir().unwrap();
    let config = format!(
        "
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: 127.0.0.1:{grpc}}}
processors:
  batch: {{send_batch_size: 1000, timeout: 20ms}}
exporters:
  otlp:
    endpoint: http://127.0.0.1:{sink_port}
    compression: none
    timeout: 1s
    sending_queue: {{storage: file, directory: {dir}, max_size_mib: 512}}
    retry_on_failure: {{initial_interval: 100ms, max_interval: 500ms, max_elapsed_time: 0s}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [otlp]}}
",
        dir = queue.path().display()
    );
    let endpoint: SocketAddr = ([127, 0, 0, 1], grpc).into();
    let sink = Sink::default();

    // The sink is down: everything acknowledged is only on the collector's disk when it dies.
    let collector = Collector::start(&config, &[grpc]);
    let load = Load::new();
    let running = load.start(endpoint, 4, 20_000);
    tokio::time::sleep(Duration::from_secs(3)).await;
    tokio::task::block_in_place(|| collector.kill());
    let acked_before_crash = load.acked().len();
    assert!(
        acked_before_crash >= 30_000,
        "only {acked_before_crash} spans acknowledged before the crash"
    );

    // Restart on the same queue, bring the sink up, and keep the load going a little.
    let mut collector = Collector::start(&config, &[grpc]);
    let _sink = sink.serve(sink_port).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    load.stop();
    running.await.unwrap();

    let acked = load.acked();
    let all_arrived = wait_for(Duration::from_secs(30), || {
        let spans = sink.spans.lock().unwrap();
        acked.iter().all(|id| spans.contains_key(id))
    });
    let spans = sink.spans.lock().unwrap();
    let missing = acked.iter().filter(|id| !spans.contains_key(id)).count();
    assert!(
        all_arrived,
        "{missing} of {} acknowledged spans never arrived",
        acked.len()
    );
    let duplicates = spans.values().filter(|s| s.copies > 1).count();
    println!(
        "acknowledged {} spans ({acked_before_crash} before the crash), {} received, {duplicates} duplicated",
        acked.len(),
        spans.len()
    );
    drop(spans);
    assert!(
        collector
            .logs()
            .contains("replaying batches not yet delivered"),
        "{}",
        collector.logs()
    );
    assert!(collector.is_running());
    collector.stop();
}
