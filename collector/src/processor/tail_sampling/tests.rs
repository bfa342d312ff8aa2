use std::sync::atomic::{AtomicUsize, Ordering};

use odigos_proto::otlp::trace::v1::Status;

use super::*;
use crate::processor::attributes::string_value;
use crate::processor::{Built, ProcessorConfig, Updater};

/// Records every request that reaches it; refuses the first `refuse` as full.
#[derive(Default)]
struct Capture {
    requests: Mutex<Vec<ExportTraceServiceRequest>>,
    refuse: AtomicUsize,
}

#[async_trait]
impl Consumer for Capture {
    async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
        let refuse = self.refuse.load(Ordering::SeqCst);
        if refuse > 0 {
            self.refuse.store(refuse - 1, Ordering::SeqCst);
            return Err(batch.refuse(ConsumeError::Exhausted("full".into())));
        }
        let Decoded::Traces(request) = batch.into_decoded().unwrap() else {
            panic!("traces only")
        };
        self.requests.lock().unwrap().push(request);
        Ok(())
    }
}

impl Capture {
    /// Names of every span received, sorted.
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .requests
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|s| s.name.clone())
            .collect();
        names.sort();
        names
    }

    fn requests(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

fn config(yaml: &str) -> TailSamplingConfig {
    let value = serde_yaml::from_str(yaml).unwrap();
    let config: TailSamplingConfig = crate::yaml::from_value(value).unwrap();
    assert_eq!(config.validate(), Vec::new());
    config
}

/// A processor running on `yaml`, with what it sends captured.
struct Running {
    next: Next,
    update: Updater,
    capture: Arc<Capture>,
    context: Context,
}

impl Running {
    fn start(yaml: &str) -> Running {
        let capture = Arc::new(Capture::default());
        let context = Context::new();
        let Built { next, update } = ProcessorConfig::TailSampling(config(yaml)).build(
            &ComponentId::new("tail_sampling"),
            Signal::Traces,
            capture.clone(),
            &context,
        );
        Running {
            next,
            update: update.expect("policies update in place"),
            capture,
            context,
        }
    }

    async fn send(&self, resources: Vec<ResourceSpans>) -> Result<(), ConsumeError> {
        let request = ExportTraceServiceRequest {
            resource_spans: resources,
        };
        let batch = Batch::from_bytes(Signal::Traces, request.encode_to_vec().into()).unwrap();
        self.next.consume(batch).await
    }

    fn metric(&self, name: &str) -> i64 {
        let name = format!("otelcol_processor_tail_sampling_{name}");
        let labels = [("processor", "tail_sampling")];
        self.context.registry.value(&name, &labels).unwrap()
    }
}

fn id(trace: u64) -> Vec<u8> {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&trace.wrapping_mul(0x9e3779b97f4a7c15).to_le_bytes());
    id[8..].copy_from_slice(&trace.to_be_bytes());
    id.to_vec()
}

/// A span of trace `trace`, named `name`, from `start_ms` to `end_ms`.
fn span(trace: u64, name: &str, start_ms: u64, end_ms: u64) -> Span {
    Span {
        trace_id: id(trace),
        name: name.into(),
        start_time_unix_nano: 1_700_000_000_000_000_000 + start_ms * 1_000_000,
        end_time_unix_nano: 1_700_000_000_000_000_000 + end_ms * 1_000_000,
        ..Default::default()
    }
}

fn failed(mut span: Span) -> Span {
    span.status = Some(Status {
        code: StatusCode::Error as i32,
        message: "boom".into(),
    });
    span
}

fn attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(string_value(value)),
        ..Default::default()
    }
}

fn tagged(mut span: Span, key: &str, value: &str) -> Span {
    span.attributes.push(attribute(key, value));
    span
}

/// Spans of service `service`, in one scope named `scope`.
fn resource(service: &str, scope: &str, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![attribute("service.name", service)],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: scope.into(),
                ..Default::default()
            }),
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn sleep(ms: u64) -> tokio::time::Sleep {
    tokio::time::sleep(Duration::from_millis(ms))
}

#[tokio::test(start_paused = true)]
async fn keeps_error_and_slow_traces_and_drops_fast_ok_ones() {
    let running = Running::start(
        "
decision_wait: 5s
policies:
  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
  - {name: slow, type: latency, latency: {threshold_ms: 500}}
",
    );
    let spans = vec![
        span(1, "error-a", 0, 100),
        failed(span(1, "error-b", 10, 50)),
        span(2, "fast-a", 0, 100),
        // No span lasts 500ms, but the trace does, from first start to last end.
        span(3, "slow-a", 0, 300),
        span(3, "slow-b", 200, 600),
    ];
    running
        .send(vec![resource("shop", "http", spans)])
        .await
        .unwrap();

    sleep(4_900).await;
    assert_eq!(running.capture.names(), Vec::<String>::new());
    sleep(200).await;
    assert_eq!(
        running.capture.names(),
        ["error-a", "error-b", "slow-a", "slow-b"]
    );
    assert_eq!(running.capture.requests(), 1);
    assert_eq!(running.metric("sampled_traces"), 2);
    assert_eq!(running.metric("not_sampled_traces"), 1);
    assert_eq!(running.metric("dropped_spans"), 1);
    assert_eq!(running.metric("held_traces"), 0);
    let policy = |name| {
        let labels = [("processor", "tail_sampling"), ("policy", name)];
        let metric = "otelcol_processor_tail_sampling_policy_sampled_traces";
        running.context.registry.value(metric, &labels).unwrap()
    };
    assert_eq!((policy("errors"), policy("slow")), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn latency_threshold_and_upper_bound() {
    let running = Running::start(
        "
decision_wait: 1s
policies:
  - {name: band, type: latency, latency: {threshold_ms: 500, upper_threshold_ms: 1000}}
",
    );
    let spans = [499, 500, 999, 1000]
        .into_iter()
        .map(|ms| span(ms, &format!("lasting-{ms}"), 0, ms))
        .collect();
    running
        .send(vec![resource("shop", "http", spans)])
        .await
        .unwrap();
    sleep(1_500).await;
    assert_eq!(running.capture.names(), ["lasting-500", "lasting-999"]);
}

#[tokio::test(start_paused = true)]
async fn string_attribute_matches_span_or_resource() {
    let running = Running::start(
        "
decision_wait: 1s
policies:
  - name: checkout
    type: string_attribute
    string_attribute: {key: service.name, values: [checkout]}
",
    );
    running
        .send(vec![
            resource("checkout", "http", vec![span(1, "on-resource", 0, 1)]),
            resource(
                "gateway",
                "http",
                vec![
                    tagged(span(2, "on-span", 0, 1), "service.name", "checkout"),
                    tagged(span(3, "other", 0, 1), "service.name", "checkout-v2"),
                ],
            ),
        ])
        .await
        .unwrap();
    sleep(1_500).await;
    assert_eq!(running.capture.names(), ["on-resource", "on-span"]);

    let running = Running::start(
        "
decision_wait: 1s
policies:
  - name: not-internal
    type: string_attribute
    string_attribute:
      key: http.route
      values: ['^/internal/', '^/health$']
      enabled_regex_matching: true
      invert_match: true
",
    );
    let spans = vec![
        tagged(span(1, "internal", 0, 1), "http.route", "/internal/jobs"),
        tagged(span(2, "health", 0, 1), "http.route", "/health"),
        tagged(span(3, "healthy", 0, 1), "http.route", "/healthy"),
        tagged(span(4, "cart", 0, 1), "http.route", "/cart"),
    ];
    running
        .send(vec![resource("shop", "http", spans)])
        .await
        .unwrap();
    sleep(1_500).await;
    assert_eq!(running.capture.names(), ["cart", "healthy"]);
}

#[tokio::test(start_paused = true)]
async fn probabilistic_keeps_about_the_share_and_is_deterministic() {
    let kept = |yaml: &'static str| async move {
        let running = Running::start(yaml);
        let spans = (0..10_000).map(|i| span(i, &i.to_string(), 0, 1)).collect();
        running
            .send(vec![resource("shop", "http", spans)])
            .await
            .unwrap();
        sleep(1_500).await;
        running.capture.names()
    };
    let yaml = "
decision_wait: 1s
policies:
  - {name: tenth, type: probabilistic, probabilistic: {sampling_percentage: 10}}
";
    let first = kept(yaml).await;
    assert!(
        (900..=1_100).contains(&first.len()),
        "kept {} of 10000 at 10%",
        first.len()
    );
    assert_eq!(kept(yaml).await, first);
    let salted = kept(
        "
decision_wait: 1s
policies:
  - {name: tenth, type: probabilistic, probabilistic: {sampling_percentage: 10, hash_salt: other}}
",
    )
    .await;
    assert!((900..=1_100).contains(&salted.len()));
    assert_ne!(salted, first);
}

#[tokio::test(start_paused = true)]
async fn and_policy_needs_every_sub_policy() {
    let running = Running::start(
        "
decision_wait: 1s
policies:
  - name: checkout-slow
    type: and
    and:
      and_sub_policy:
        - {name: checkout, type: string_attribute, string_attribute: {key: service.name, values: [checkout]}}
        - {name: slow, type: latency, latency: {threshold_ms: 500}}
",
    );
    running
        .send(vec![
            resource(
                "checkout",
                "http",
                vec![
                    span(1, "checkout-slow", 0, 800),
                    span(2, "checkout-fast", 0, 20),
                ],
            ),
            resource("cart", "http", vec![span(3, "cart-slow", 0, 800)]),
        ])
        .await
        .unwrap();
    sleep(1_500).await;
    assert_eq!(running.capture.names(), ["checkout-slow"]);
}

#[tokio::test(start_paused = true)]
async fn late_spans_follow_the_cached_decision() {
    let running = Running::start(
        "
decision_wait: 2s
policies:
  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
",
    );
    running
        .send(vec![resource(
            "shop",
            "http",
            vec![failed(span(1, "kept", 0, 10)), span(2, "dropped", 0, 10)],
        )])
        .await
        .unwrap();
    sleep(2_500).await;
    assert_eq!(running.capture.names(), ["kept"]);

    // Both late spans are fine on their own: the decision of their trace rules.
    running
        .send(vec![resource(
            "shop",
            "http",
            vec![
                span(1, "kept-late", 20, 30),
                span(2, "dropped-late", 20, 30),
            ],
        )])
        .await
        .unwrap();
    sleep(200).await;
    assert_eq!(running.capture.names(), ["kept", "kept-late"]);
    assert_eq!(running.metric("late_spans"), 2);
    assert_eq!(running.metric("dropped_spans"), 2);
    assert_eq!(running.metric("held_traces"), 0);
}

#[tokio::test(start_paused = true)]
async fn num_traces_bound_decides_the_oldest_early_without_loss() {
    let running = Running::start(
        "
decision_wait: 10s
num_traces: 2
policies:
  - {name: all, type: always_sample}
",
    );
    for trace in 1..=3 {
        let spans = vec![span(trace, &format!("t{trace}"), 0, 1)];
        running
            .send(vec![resource("shop", "http", spans)])
            .await
            .unwrap();
    }
    sleep(500).await;
    assert_eq!(running.capture.names(), ["t1"]);
    assert_eq!(running.metric("decided_early_traces"), 1);
    assert_eq!(running.metric("held_traces"), 2);

    sleep(10_000).await;
    assert_eq!(running.capture.names(), ["t1", "t2", "t3"]);
    assert_eq!(running.metric("sampled_traces"), 3);
}

#[tokio::test(start_paused = true)]
async fn max_spans_per_trace_drops_and_counts_the_rest() {
    let running = Running::start(
        "
decision_wait: 1s
max_spans_per_trace: 2
policies:
  - {name: all, type: always_sample}
",
    );
    let spans = (0..5).map(|i| span(1, &format!("s{i}"), 0, 1)).collect();
    running
        .send(vec![resource("shop", "http", spans)])
        .await
        .unwrap();
    sleep(1_500).await;
    assert_eq!(running.capture.names(), ["s0", "s1"]);
    assert_eq!(running.metric("spans_over_limit"), 3);
}

#[tokio::test(start_paused = true)]
async fn traces_decided_together_leave_in_one_request_grouped_by_resource_and_scope() {
    let running = Running::start(
        "
decision_wait: 1s
policies:
  - {name: all, type: always_sample}
",
    );
    running
        .send(vec![resource(
            "a",
            "http",
            vec![span(1, "a1", 0, 1), span(2, "a2", 0, 1)],
        )])
        .await
        .unwrap();
    running
        .send(vec![
            resource("a", "http", vec![span(1, "a1-more", 0, 1)]),
            resource("a", "db", vec![span(2, "a2-db", 0, 1)]),
            resource("b", "http", vec![span(3, "b3", 0, 1)]),
        ])
        .await
        .unwrap();
    sleep(1_500).await;
    let requests = running.capture.requests.lock().unwrap();
    assert_eq!(requests.len(), 1);
    let layout: Vec<(String, Vec<(String, usize)>)> = requests[0]
        .resource_spans
        .iter()
        .map(|r| {
            let service = r.resource.as_ref().unwrap().attributes[0].clone();
            let Some(any_value::Value::StringValue(service)) = service.value.unwrap().value else {
                panic!()
            };
            let scopes = r
                .scope_spans
                .iter()
                .map(|s| (s.scope.as_ref().unwrap().name.clone(), s.spans.len()))
                .collect();
            (service, scopes)
        })
        .collect();
    let expected = [
        ("a", vec![("http", 3), ("db", 1)]),
        ("b", vec![("http", 1)]),
    ];
    let expected: Vec<(String, Vec<(String, usize)>)> = expected
        .into_iter()
        .map(|(r, scopes)| {
            let scopes = scopes.into_iter().map(|(s, n)| (s.to_string(), n));
            (r.to_string(), scopes.collect())
        })
        .collect();
    assert_eq!(layout, expected);
}

#[tokio::test(start_paused = true)]
async fn retiring_decides_and_flushes_every_held_trace_at_once() {
    let Running {
        next,
        update,
        capture,
        context,
    } = Running::start(
        "
decision_wait: 60s
policies:
  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
",
    );
    let spans = vec![failed(span(1, "kept", 0, 1)), span(2, "dropped", 0, 1)];
    let request = ExportTraceServiceRequest {
        resource_spans: vec![resource("shop", "http", spans)],
    };
    next.consume(Batch::from_decoded(Decoded::Traces(request)))
        .await
        .unwrap();
    sleep(100).await;
    assert_eq!(capture.names(), Vec::<String>::new());

    // What the topology does when a pipeline is retired or the collector stops: the entry goes
    // (the updater stays with the running config), and shutdown waits for background tasks.
    let started = Instant::now();
    drop(next);
    context.tasks.close();
    context.tasks.wait().await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(capture.names(), ["kept"]);
    drop(update);
}

#[tokio::test(start_paused = true)]
async fn policies_change_in_place_keeping_held_traces() {
    let before = "
decision_wait: 5s
policies:
  - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
";
    let after = "
decision_wait: 5s
policies:
  - {name: checkout, type: string_attribute, string_attribute: {key: service.name, values: [checkout]}}
";
    let (was, now) = (
        ProcessorConfig::TailSampling(config(before)),
        ProcessorConfig::TailSampling(config(after)),
    );
    assert!(was.updatable_to(&now));
    let longer = ProcessorConfig::TailSampling(config(&after.replace("5s", "6s")));
    assert!(!was.updatable_to(&longer));

    let running = Running::start(before);
    running
        .send(vec![
            resource("checkout", "http", vec![span(1, "checkout", 0, 1)]),
            resource("cart", "http", vec![failed(span(2, "cart-error", 0, 1))]),
        ])
        .await
        .unwrap();
    sleep(1_000).await;
    (running.update)(&now);
    sleep(5_000).await;
    assert_eq!(running.capture.names(), ["checkout"]);
}

#[tokio::test(start_paused = true)]
async fn a_full_next_stage_is_retried_and_holds_senders_back() {
    let running = Running::start(
        "
decision_wait: 1s
policies:
  - {name: all, type: always_sample}
",
    );
    running.capture.refuse.store(2, Ordering::SeqCst);
    running
        .send(vec![resource("shop", "http", vec![span(1, "first", 0, 1)])])
        .await
        .unwrap();
    // Decided at 1s and refused; the retry waits 100ms, then 200ms.
    sleep(1_050).await;
    let more = || vec![resource("shop", "http", vec![span(2, "second", 0, 1)])];
    assert!(matches!(
        running.send(more()).await,
        Err(ConsumeError::Exhausted(_))
    ));
    sleep(500).await;
    assert_eq!(running.capture.names(), ["first"]);
    running.send(more()).await.unwrap();
    sleep(1_500).await;
    assert_eq!(running.capture.names(), ["first", "second"]);
}

#[test]
fn validation_lists_every_problem_with_its_path() {
    let value = serde_yaml::from_str(
        "
num_traces: 0
policies:
  - {name: a, type: sometimes}
  - {name: b, type: status_code}
  - {name: c, type: probabilistic, probabilistic: {sampling_percentage: 150}}
  - name: d
    type: string_attribute
    string_attribute: {key: route, values: ['(', ok], enabled_regex_matching: true}
  - {name: e, type: latency, latency: {threshold_ms: 500, upper_threshold_ms: 100}}
  - {type: always_sample}
  - {name: a, type: always_sample, latency: {threshold_ms: 1}}
  - name: g
    type: and
    and:
      and_sub_policy:
        - {name: inner, type: and, and: {and_sub_policy: []}}
        - {name: codes, type: status_code, status_code: {status_codes: [ERROR, BROKEN]}}
",
    )
    .unwrap();
    let Err(crate::config::ParseError::Fields(problems)) =
        ProcessorConfig::parse("tail_sampling", value)
    else {
        panic!("invalid config accepted")
    };
    let found: Vec<String> = problems
        .iter()
        .map(|(path, message)| format!("{}: {message}", path.join(".")))
        .collect();
    let expected = [
        "num_traces: must be greater than 0",
        "policies.0.type: unknown policy type \"sometimes\"",
        "policies.1.status_code: type status_code needs a status_code block",
        "policies.2.probabilistic.sampling_percentage: 150 is not between 0 and 100",
        "policies.3.string_attribute.values.0: invalid regexp \"(\"",
        "policies.4.latency.upper_threshold_ms: must be 0 or greater than threshold_ms (500), got 100",
        "policies.5.name: a policy needs a name",
        "policies.6.name: duplicate policy name \"a\"",
        "policies.6.latency: latency has no meaning for type always_sample",
        "policies.7.and.and_sub_policy.0.type: and cannot be nested in and",
        "policies.7.and.and_sub_policy.0.and.and_sub_policy: list at least one sub-policy",
        "policies.7.and.and_sub_policy.1.status_code.status_codes.1: unknown status code \"BROKEN\"",
    ];
    for want in expected {
        assert!(
            found.iter().any(|f| f.starts_with(want)),
            "missing {want:?} in {found:#?}"
        );
    }
    assert_eq!(found.len(), expected.len(), "{found:#?}");

    let empty = TailSamplingConfig::default().validate();
    assert_eq!(
        empty,
        [(
            vec!["policies".to_string()],
            "list at least one policy".into()
        )]
    );
}

#[test]
fn defaults_and_signals() {
    let config = config("policies: [{name: all, type: always_sample}]");
    assert_eq!(
        (
            config.decision_wait,
            config.num_traces,
            config.max_spans_per_trace
        ),
        (Duration::from_secs(10), 50_000, 10_000)
    );
    assert!(ProcessorConfig::KINDS.contains(&"tail_sampling"));
    assert_eq!(
        ProcessorConfig::TailSampling(config).signals(),
        [Signal::Traces]
    );
}
