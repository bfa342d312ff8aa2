//! A destination outage under load: while the destination is down the collector refuses what it
//! cannot hold (so senders keep their data) and stays within its memory limit; once the
//! destination is back, every span the collector acknowledged arrives.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use odigos_tests::traffic::{Backend, Load, Mode};
use odigos_tests::*;
use tokio::task::block_in_place;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_until_senders_are_refused_loses_nothing_acknowledged() {
    let sink = Backend::new(Mode::Up);
    let config = format!(
        "
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: 127.0.0.1:0}}
processors:
  memory_limiter: {{limit_mib: 256, check_interval: 100ms}}
  batch: {{send_batch_size: 1024, timeout: 50ms}}
exporters:
  otlp:
    endpoint: http://127.0.0.1:{sink}
    compression: none
    timeout: 2s
    sending_queue: {{queue_size: 200}}
    retry_on_failure: {{initial_interval: 200ms, max_interval: 1s, max_elapsed_time: 0s}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces:
      receivers: [otlp]
      processors: [memory_limiter, batch]
      exporters: [otlp]
",
        sink = sink.port
    );
    let mut collector = block_in_place(|| Collector::start(&config));
    let endpoint: SocketAddr = ([127, 0, 0, 1], block_in_place(|| collector.port("grpc"))).into();
    let load = Load::new();
    let running = load.start(endpoint, 4, 20_000);
    let flowing =
        block_in_place(|| wait_for(Duration::from_secs(30), || sink.sink.received() > 5_000));
    assert!(flowing, "{}", collector.logs());

    // The destination goes down, and stays down until the full queue refuses senders.
    sink.set(Mode::Down);
    let before_outage = load.acked().len();
    let refused = block_in_place(|| {
        wait_for(Duration::from_secs(120), || {
            load.failed.load(Ordering::Relaxed) > 0
        })
    });
    assert!(refused, "senders were never refused:\n{}", collector.logs());
    let during_outage = load.acked().len() - before_outage;

    // Back up: the queue drains and senders are acknowledged again.
    sink.set(Mode::Up);
    let at_recovery = load.acked().len();
    let resumed = block_in_place(|| {
        wait_for(Duration::from_secs(60), || {
            load.acked().len() > at_recovery + 5_000
        })
    });
    assert!(resumed, "load did not resume:\n{}", collector.logs());
    load.stop();
    running.await.unwrap();

    let acked = load.acked();
    let all_arrived = block_in_place(|| {
        wait_for(Duration::from_secs(60), || {
            let spans = sink.sink.spans.lock().unwrap();
            acked.iter().all(|id| spans.contains_key(id))
        })
    });
    let missing = {
        let spans = sink.sink.spans.lock().unwrap();
        acked.iter().filter(|id| !spans.contains_key(id)).count()
    };
    assert!(
        all_arrived,
        "{missing} of {} acknowledged spans never arrived",
        acked.len()
    );
    let peak = collector.peak_rss_mib();
    assert!(peak < 256, "peak RSS {peak} MiB is above the 256 MiB limit");
    println!(
        "acknowledged {} spans ({during_outage} during the outage), refused {} ({:?}); peak RSS {peak} MiB",
        acked.len(),
        load.failed.load(Ordering::Relaxed),
        load.errors.lock().unwrap()
    );
    assert!(collector.is_running(), "{}", collector.logs());
    collector.stop();
}
