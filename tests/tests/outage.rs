//! A destination outage under load: while the sink is down the collector refuses what it cannot
//! hold (so senders keep their data) and stays within its memory limit; once the sink is back,
//! every span the collector acknowledged arrives.

use std::net::SocketAddr;
use std::time::Duration;

use odigos_tests::traffic::{Load, Sink};
use odigos_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_down_for_thirty_seconds_loses_nothing_acknowledged() {
    let (grpc, sink_port) = (free_port(), free_port());
    let sink = Sink::default();
    let stop_sink = sink.serve(sink_port).await;
    let config = format!(
        "
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: 127.0.0.1:{grpc}}}
processors:
  memory_limiter: {{limit_mib: 256, check_interval: 100ms}}
  batch: {{send_batch_size: 1024, timeout: 50ms}}
exporters:
  otlp:
    endpoint: http://127.0.0.1:{sink_port}
    compression: none
    timeout: 2s
    retry_on_failure: {{initial_interval: 200ms, max_interval: 1s, max_elapsed_time: 0s}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces:
      receivers: [otlp]
      processors: [memory_limiter, batch]
      exporters: [otlp]
"
    );
    let mut collector = Collector::start(&config, &[grpc]);
    let load = Load::new();
    let endpoint: SocketAddr = ([127, 0, 0, 1], grpc).into();
    let running = load.start(endpoint, 4, 20_000);

    tokio::time::sleep(Duration::from_secs(3)).await;
    let before_outage = load.acked().len();
    drop(stop_sink);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let during_outage = load.acked().len() - before_outage;
    let _sink_again = sink.serve(sink_port).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    load.stop();
    running.await.unwrap();

    let acked = load.acked();
    let all_arrived = wait_for(Duration::from_secs(30), || {
        let spans = sink.spans.lock().unwrap();
        acked.iter().all(|id| spans.contains_key(id))
    });
    let missing = {
        let spans = sink.spans.lock().unwrap();
        acked.iter().filter(|id| !spans.contains_key(id)).count()
    };
    assert!(
        all_arrived,
        "{missing} of {} acknowledged spans never arrived",
        acked.len()
    );
    assert!(
        before_outage > 0 && acked.len() > before_outage + during_outage,
        "load did not resume"
    );
    let peak = collector.peak_rss_mib();
    assert!(peak < 256, "peak RSS {peak} MiB is above the 256 MiB limit");
    println!(
        "acknowledged {} spans ({} during the outage), refused {} ({:?}); peak RSS {peak} MiB",
        acked.len(),
        during_outage,
        load.failed.load(std::sync::atomic::Ordering::Relaxed),
        load.errors.lock().unwrap()
    );
    assert!(collector.is_running(), "{}", collector.logs());
    collector.stop();
}
