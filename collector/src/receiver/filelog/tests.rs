use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use std::sync::Arc;

use async_trait::async_trait;
use odigos_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use odigos_proto::otlp::common::v1::{KeyValue, any_value};

use super::*;
use crate::consumer::{Consumer, Next};
use crate::receiver;
use crate::receiver::Prepared as _;
use crate::{ConsumeError, Decoded};

/// Records the logs that reach the pipeline; refuses everything while `full` is set.
#[derive(Default)]
struct Capture {
    batches: Mutex<Vec<ExportLogsServiceRequest>>,
    full: AtomicBool,
}

#[async_trait]
impl Consumer for Capture {
    async fn consume(&self, mut batch: Batch) -> Result<(), ConsumeError> {
        if self.full.load(Ordering::Relaxed) {
            return Err(batch.refuse(ConsumeError::Exhausted("queue is full".into())));
        }
        batch.take_acks().accept();
        let Ok(Decoded::Logs(logs)) = batch.into_decoded() else {
            panic!("logs")
        };
        self.batches.lock().unwrap().push(logs);
        Ok(())
    }
}

/// A record as a test looks at it: body, then attributes and resource attributes as
/// `key=value`.
#[derive(Debug)]
struct Seen {
    body: String,
    attributes: Vec<String>,
    resource: Vec<String>,
}

fn show(values: &[KeyValue]) -> Vec<String> {
    values
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(any_value::Value::BoolValue(b)) => b.to_string(),
                other => format!("{other:?}"),
            };
            format!("{}={value}", kv.key)
        })
        .collect()
}

impl Capture {
    fn seen(&self) -> Vec<Seen> {
        let batches = self.batches.lock().unwrap();
        let mut seen = Vec::new();
        for request in batches.iter() {
            for resource in &request.resource_logs {
                let resource_attributes = show(&resource.resource.as_ref().unwrap().attributes);
                for record in resource.scope_logs.iter().flat_map(|s| &s.log_records) {
                    let body = match record.body.as_ref().and_then(|b| b.value.as_ref()) {
                        Some(any_value::Value::StringValue(s)) => s.clone(),
                        Some(any_value::Value::BytesValue(b)) => format!("bytes:{b:?}"),
                        other => format!("{other:?}"),
                    };
                    seen.push(Seen {
                        body,
                        attributes: show(&record.attributes),
                        resource: resource_attributes.clone(),
                    });
                }
            }
        }
        seen
    }

    fn bodies(&self) -> Vec<String> {
        self.seen().into_iter().map(|s| s.body).collect()
    }

    /// Waits until `count` records arrived, and a little more to see that no more do.
    async fn wait_for(&self, count: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.seen().len() < count && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.bodies()
    }
}

fn config(yaml: &str) -> FilelogConfig {
    let mut config: FilelogConfig =
        crate::yaml::from_value(crate::yaml::parse(yaml).unwrap()).unwrap();
    assert!(config.validate().is_empty(), "{:?}", config.validate());
    config.poll_interval = Duration::from_millis(20);
    config
}

async fn start(config: &FilelogConfig, capture: &Arc<Capture>) -> Box<dyn receiver::Running> {
    let routes = Routes([None, None, Some(capture.clone() as Next)]);
    let prepared = prepare(
        config,
        &ComponentId::new("filelog"),
        routes,
        &Context::new(),
    )
    .await
    .unwrap();
    Box::new(prepared).commit(None).0
}

fn append(path: &Path, text: &str) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

fn numbered(from: usize, to: usize) -> String {
    (from..to).map(|i| format!("line {i}\n")).collect()
}

fn expected(from: usize, to: usize) -> Vec<String> {
    (from..to).map(|i| format!("line {i}")).collect()
}

#[tokio::test]
async fn files_found_at_start_are_read_from_their_end_and_new_ones_from_their_beginning() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.log");
    append(&old, "before the start\n");
    let capture = Arc::new(Capture::default());
    let config = config(&format!("include: ['{}/*.log']", dir.path().display()));
    let running = start(&config, &capture).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    append(&old, "after the start\n");
    append(&dir.path().join("new.log"), "in a new file\n");
    append(&dir.path().join("other.txt"), "not matched\n");
    let mut bodies = capture.wait_for(2).await;
    bodies.sort();
    assert_eq!(bodies, ["after the start", "in a new file"]);
    let seen = capture.seen();
    let new = seen.iter().find(|s| s.body == "in a new file").unwrap();
    assert_eq!(new.attributes, ["log.file.name=new.log"]);
    running.stop().await;
}

#[tokio::test]
async fn rotation_by_rename_and_by_copytruncate_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let capture = Arc::new(Capture::default());
    // Copies keep a name the globs match (app.log.1); renamed files get one they do not.
    let config = config(&format!(
        "include: ['{}/app.log*']\nstart_at: beginning",
        dir.path().display()
    ));
    let running = start(&config, &capture).await;
    append(&log, &numbered(0, 100));
    assert_eq!(capture.wait_for(100).await, expected(0, 100));

    // Renamed away (the globs no longer see it), written to under the old handle, then a
    // new app.log.
    let mut writer = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::fs::rename(&log, dir.path().join("rotated.old")).unwrap();
    writer.write_all(numbered(100, 150).as_bytes()).unwrap();
    drop(writer);
    append(&log, &numbered(150, 200));
    assert_eq!(capture.wait_for(200).await, expected(0, 200));

    // Copytruncate: lines the receiver has not read yet are in the copy.
    let reading = capture.seen().len();
    append(&log, &numbered(200, 250));
    std::fs::copy(&log, dir.path().join("app.log.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&log, &numbered(250, 300));
    assert!(reading <= 250);
    let mut bodies = capture.wait_for(300).await;
    // Files are read side by side: in order within each.
    bodies[200..].sort_by_key(|b| b[5..].parse::<usize>().unwrap());
    assert_eq!(bodies, expected(0, 300));
    running.stop().await;
}

#[tokio::test]
async fn offsets_move_only_past_what_the_pipeline_took_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let storage = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, &numbered(0, 10));
    let mut config = config(&format!(
        "include: ['{}/*.log']\nstart_at: beginning",
        dir.path().display()
    ));
    config.storage_directory = Some(storage.path().to_path_buf());

    // A pipeline that refuses: nothing is taken, and it is offered again.
    let capture = Arc::new(Capture::default());
    capture.full.store(true, Ordering::Relaxed);
    let running = start(&config, &capture).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(capture.bodies().is_empty());
    capture.full.store(false, Ordering::Relaxed);
    assert_eq!(capture.wait_for(10).await, expected(0, 10));
    running.stop().await;

    // Written while stopped: a new receiver with the same storage reads only that.
    append(&log, &numbered(10, 20));
    let capture = Arc::new(Capture::default());
    let running = start(&config, &capture).await;
    assert_eq!(capture.wait_for(10).await, expected(10, 20));
    running.stop().await;
    let saved =
        std::fs::read_to_string(storage.path().join("receiver_filelog_filelog.json")).unwrap();
    assert!(saved.contains("\"offset\":150"), "{saved}");
}

#[tokio::test]
async fn container_logs_are_joined_and_know_their_pod() {
    let dir = tempfile::tempdir().unwrap();
    let container = dir
        .path()
        .join("shop_checkout-7d9f_0f6c1c2e-1b2a-4c3d-9e8f-0123456789ab/app");
    std::fs::create_dir_all(&container).unwrap();
    let log = container.join("0.log");
    let capture = Arc::new(Capture::default());
    let config = config(&format!(
        "include: ['{}/*/*/*.log']\nstart_at: beginning\ninclude_file_path: true\noperators: [{{type: container}}]\nresource: {{service.name: checkout-api}}\nattributes: {{team: shop}}",
        dir.path().display()
    ));
    let running = start(&config, &capture).await;
    append(
        &log,
        "2024-05-01T10:00:00Z stdout P a long \n2024-05-01T10:00:00Z stdout F line\n2024-05-01T10:00:01Z stderr F oops\n",
    );
    append(
        &log,
        "{\"log\":\"from docker\\n\",\"stream\":\"stdout\",\"time\":\"2024-05-01T10:00:02Z\"}\n",
    );
    assert_eq!(
        capture.wait_for(3).await,
        ["a long line", "oops", "from docker"]
    );
    let seen = capture.seen();
    assert_eq!(
        seen[1].attributes,
        [
            "team=shop".to_string(),
            "log.file.name=0.log".into(),
            format!("log.file.path={}", log.display()),
            "log.iostream=stderr".into(),
            "logtag=F".into(),
        ]
    );
    assert_eq!(
        seen[0].resource,
        [
            "k8s.namespace.name=shop",
            "k8s.pod.name=checkout-7d9f",
            "k8s.pod.uid=0f6c1c2e-1b2a-4c3d-9e8f-0123456789ab",
            "k8s.container.name=app",
            "k8s.container.restart_count=0",
            "service.name=checkout-api"
        ]
    );
    running.stop().await;
}

#[tokio::test]
async fn bad_bytes_and_long_lines_are_kept_cut_and_flagged() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let capture = Arc::new(Capture::default());
    let config = config(&format!(
        "include: ['{}/*.log']\nstart_at: beginning\nmax_log_size: 16\nmax_log_size_behavior: truncate",
        dir.path().display()
    ));
    let running = start(&config, &capture).await;
    let mut file = std::fs::File::create(&log).unwrap();
    file.write_all(b"caf\xe9 latin-1\n0123456789abcdefTHE REST\nshort\n")
        .unwrap();
    let bodies = capture.wait_for(3).await;
    assert_eq!(bodies, ["caf\u{fffd} latin-1", "0123456789abcdef", "short"]);
    let seen = capture.seen();
    assert!(
        seen[1]
            .attributes
            .contains(&"log.record.truncated=true".to_string())
    );
    assert!(!seen[2].attributes.iter().any(|a| a.contains("truncated")));
    // A line longer than several reads: one record, cut; the rest skipped to its newline.
    let mut long = vec![b'L'; 3 * READ_LIMIT];
    long.extend_from_slice(b"\nafter\n");
    file.write_all(&long).unwrap();
    let bodies = capture.wait_for(5).await;
    assert_eq!(bodies[3..], ["LLLLLLLLLLLLLLLL", "after"]);
    running.stop().await;
}

#[tokio::test]
async fn a_line_longer_than_max_log_size_is_split_into_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let capture = Arc::new(Capture::default());
    let config = config(&format!(
        "include: ['{}/*.log']\nstart_at: beginning",
        dir.path().display()
    ));
    let running = start(&config, &capture).await;
    append(&log, "   job 42 done   \n\n\n");
    capture.wait_for(1).await;
    let mut long = "x".repeat((1 << 20) + 10);
    long.push('\n');
    append(&log, &long);
    let bodies = capture.wait_for(3).await;
    let lengths: Vec<usize> = bodies.iter().map(String::len).collect();
    assert_eq!(lengths, [11, 1 << 20, 10]);
    running.stop().await;
}

#[tokio::test]
async fn a_new_config_takes_effect_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let capture = Arc::new(Capture::default());
    let first = config(&format!(
        "include: ['{}/a.log']\nstart_at: beginning",
        dir.path().display()
    ));
    let running = start(&first, &capture).await;
    append(&dir.path().join("a.log"), "a1\n");
    assert_eq!(capture.wait_for(1).await, ["a1"]);
    let second = config(&format!(
        "include: ['{}/*.log']\nstart_at: beginning\ninclude_file_name: false",
        dir.path().display()
    ));
    let routes = Routes([None, None, Some(capture.clone() as Next)]);
    let prepared = prepare(
        &second,
        &ComponentId::new("filelog"),
        routes,
        &Context::new(),
    )
    .await
    .unwrap();
    let (running, retired) = Box::new(prepared).commit(Some(running));
    assert!(retired.is_empty());
    append(&dir.path().join("a.log"), "a2\n");
    append(&dir.path().join("b.log"), "b1\n");
    let mut bodies = capture.wait_for(3).await;
    bodies.sort();
    assert_eq!(
        bodies,
        ["a1", "a2", "b1"],
        "a.log read on from where it was"
    );
    assert!(capture.seen()[2].attributes.is_empty());
    running.stop().await;
}

#[test]
fn bad_settings_are_named() {
    let problems = crate::receiver::problems::<FilelogConfig>;
    assert_eq!(
        problems("include: []"),
        ["include: list at least one glob of files to read"]
    );
    let said = problems(
        "include: ['/x/*.log']\nencoding: utf-16\nmultiline: {line_start_pattern: '('}\noperators: [{type: regex_parser}]",
    );
    assert!(
        said[0].starts_with("encoding: encoding \"utf-16\" is not supported"),
        "{said:?}"
    );
    assert!(
        said[1].starts_with("multiline.line_start_pattern: invalid regex"),
        "{said:?}"
    );
    assert!(
        said[2].starts_with("operators.0.type: operator \"regex_parser\" is not supported"),
        "{said:?}"
    );
}
