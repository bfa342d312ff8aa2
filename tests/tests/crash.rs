//! `kill -9` under load with a persistent queue: after a restart, every span the collector had
//! acknowledged is delivered (some may arrive twice; none is missing).

use std::net::SocketAddr;
use std::time::Duration;

use odigos_tests::traffic::{Backend, Load, Mode};
use odigos_tests::*;
use tokio::task::block_in_place;

fn config(sink: u16, queue: &std::path::Path) -> String {
    format!(
        "
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: 127.0.0.1:0}}
processors:
  batch: {{send_batch_size: 1000, timeout: 20ms}}
exporters:
  otlp:
    endpoint: http://127.0.0.1:{sink}
    compression: none
    timeout: 1s
    sending_queue: {{storage: file_storage, max_size_mib: 512}}
    retry_on_failure: {{initial_interval: 100ms, max_interval: 500ms, max_elapsed_time: 0s}}
extensions:
  file_storage: {{directory: {dir}}}
service:
  extensions: [file_storage]
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [otlp]}}
",
        dir = queue.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_loses_nothing_acknowledged() {
    let queue = tempfile::tempdir().unwrap();
    // The destination is down: what the collector acknowledges is only on its disk.
    let sink = Backend::new(Mode::Down);
    let config = config(sink.port, queue.path());
    let mut collector = block_in_place(|| Collector::start(&config));
    let endpoint: SocketAddr = ([127, 0, 0, 1], block_in_place(|| collector.port("grpc"))).into();
    let load = Load::new();
    let running = load.start(endpoint, 4, 20_000);
    let queued =
        block_in_place(|| wait_for(Duration::from_secs(60), || load.acked().len() >= 20_000));
    assert!(
        queued,
        "acknowledged only {}:\n{}",
        load.acked().len(),
        collector.logs()
    );
    block_in_place(|| collector.kill());
    load.stop();
    running.await.unwrap();
    let before_crash = load.acked();

    // Restart on the same queue, bring the destination up, and send some more.
    let mut collector = block_in_place(|| Collector::start(&config));
    sink.set(Mode::Up);
    let endpoint: SocketAddr = ([127, 0, 0, 1], block_in_place(|| collector.port("grpc"))).into();
    let after = Load::starting_at(1 << 40);
    let running = after.start(endpoint, 4, 20_000);
    let more =
        block_in_place(|| wait_for(Duration::from_secs(60), || after.acked().len() >= 5_000));
    assert!(
        more,
        "not acknowledged after the restart:\n{}",
        collector.logs()
    );
    after.stop();
    running.await.unwrap();

    let acked: Vec<u64> = before_crash.iter().chain(&after.acked()).copied().collect();
    let all_arrived = block_in_place(|| {
        wait_for(Duration::from_secs(60), || {
            let spans = sink.sink.spans.lock().unwrap();
            acked.iter().all(|id| spans.contains_key(id))
        })
    });
    let spans = sink.sink.spans.lock().unwrap();
    let missing = acked.iter().filter(|id| !spans.contains_key(id)).count();
    assert!(
        all_arrived,
        "{missing} of {} acknowledged spans never arrived",
        acked.len()
    );
    let duplicates = spans.values().filter(|s| s.copies > 1).count();
    println!(
        "acknowledged {} spans ({} before the crash), {} received, {duplicates} duplicated",
        acked.len(),
        before_crash.len(),
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
