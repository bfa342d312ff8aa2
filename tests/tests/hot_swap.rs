//! Configuration changes under load: the collector process never restarts, and every span it
//! acknowledged reaches the sink.

use std::net::SocketAddr;
use std::time::Duration;

use odigos_tests::traffic::{Backend, Load, Mode, Sink};
use odigos_tests::*;
use tokio::task::block_in_place;

struct Ports {
    sink_a: u16,
    sink_b: u16,
}

/// Config generation `i`: the tag changes every time (in place); every fourth change in turn
/// resizes the batch, adds a second exporter, moves to the other sink, and moves back.
fn config(ports: &Ports, i: usize) -> String {
    let exporters = match i % 4 {
        0 => "[otlp/a]",
        1 => "[otlp/a]",
        2 => "[otlp/a, otlp/b]",
        _ => "[otlp/b]",
    };
    let batch_size = if (i / 4).is_multiple_of(2) { 512 } else { 2048 };
    format!(
        "
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: 127.0.0.1:0}}
processors:
  attributes/tag:
    actions: [{{key: tag, action: upsert, value: g{i}}}]
  batch: {{send_batch_size: {batch_size}, timeout: 50ms}}
exporters:
  otlp/a: {{endpoint: http://127.0.0.1:{a}, compression: none}}
  otlp/b: {{endpoint: http://127.0.0.1:{b}, compression: gzip}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces:
      receivers: [otlp]
      processors: [attributes/tag, batch]
      exporters: {exporters}
",
        a = ports.sink_a,
        b = ports.sink_b,
    )
}

fn generation(tag: &str) -> usize {
    tag.trim_start_matches('g')
        .parse()
        .unwrap_or_else(|_| panic!("bad generation {tag:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_swaps_under_load_lose_nothing() {
    let sink = Sink::default();
    let a = Backend::with_sink(Mode::Up, sink.clone());
    let b = Backend::with_sink(Mode::Up, sink.clone());
    let ports = Ports {
        sink_a: a.port,
        sink_b: b.port,
    };
    let mut collector = block_in_place(|| Collector::start(&config(&ports, 0)));
    let pid = collector.pid();

    let load = Load::new();
    *load.generation.lock().unwrap() = "g0".into();
    let endpoint: SocketAddr = ([127, 0, 0, 1], block_in_place(|| collector.port("grpc"))).into();
    let running = load.start(endpoint, 4, 20_000);
    // Each config must carry traffic before the next one comes.
    let carries = |load: &Load| {
        let from = load.acked().len();
        let flowing = block_in_place(|| {
            wait_for(Duration::from_secs(30), || {
                load.acked().len() > from + 1_000
            })
        });
        assert!(flowing, "spans stopped being acknowledged");
    };
    carries(&load);

    for i in 1..=20 {
        if i == 10 {
            // A broken config mid-load is refused whole, and the running pipeline carries on.
            let broken = config(&ports, i).replace("batch: {", "batchh: {");
            block_in_place(|| collector.rewrite(&broken, "config refused", 1));
            assert!(
                collector
                    .logs()
                    .contains("unknown processor type \"batchh\""),
                "{}",
                collector.logs()
            );
        }
        block_in_place(|| collector.rewrite(&config(&ports, i), "config applied", i));
        *load.generation.lock().unwrap() = format!("g{i}");
        carries(&load);
    }
    load.stop();
    running.await.unwrap();

    let acked = load.acked();
    let all_arrived = wait_for(Duration::from_secs(20), || {
        let spans = sink.spans.lock().unwrap();
        acked.iter().all(|id| spans.contains_key(id))
    });
    let spans = sink.spans.lock().unwrap();
    let missing: Vec<&u64> = acked.iter().filter(|id| !spans.contains_key(id)).collect();
    assert!(
        all_arrived,
        "{} acknowledged spans never arrived, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );

    // Each attribute change holds from its swap on: a span sent after generation N was applied
    // carries generation N or later.
    for (id, seen) in spans.iter() {
        assert!(
            generation(&seen.tag) >= generation(&seen.sent_after),
            "span {id} sent after {} carries {}",
            seen.sent_after,
            seen.tag
        );
    }
    let duplicates = spans.values().filter(|s| s.copies > 1).count();
    let last = spans.values().filter(|s| s.tag == "g20").count();
    assert!(last > 0, "no span went through the last config");
    println!(
        "acknowledged {} spans, {} failed ({:?}), {} duplicates, {} received",
        acked.len(),
        load.failed.load(std::sync::atomic::Ordering::Relaxed),
        load.errors.lock().unwrap(),
        duplicates,
        spans.len()
    );
    drop(spans);

    assert!(
        collector.is_running(),
        "the collector exited:\n{}",
        collector.logs()
    );
    assert_eq!(collector.pid(), pid);
    let log = collector.stop();
    assert_eq!(log.matches("collector started").count(), 1, "{log}");
}
