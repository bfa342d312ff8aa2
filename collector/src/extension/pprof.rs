//! `pprof`: CPU profiles of the collector over HTTP, in the pprof protobuf format that
//! `go tool pprof` and other profile viewers read: `GET /debug/pprof/profile?seconds=30`.
//!
//! The profile is sampled: a `SIGPROF` timer interrupts the process `frequency` times a
//! second of CPU time, and each interruption records the stack of the thread it landed on.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use axum::extract::Query;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prost::Message;
use serde::Deserialize;

use crate::config::ComponentConfig;

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PprofConfig {
    /// `host:port` to serve on.
    pub endpoint: String,
    /// Go's block profiling; only 0 (off) is accepted: there is no Go runtime to profile.
    pub block_profile_fraction: i64,
    /// Go's mutex profiling; only 0 (off) is accepted: there is no Go runtime to profile.
    pub mutex_profile_fraction: i64,
}

impl Default for PprofConfig {
    fn default() -> Self {
        PprofConfig {
            endpoint: "localhost:1777".into(),
            block_profile_fraction: 0,
            mutex_profile_fraction: 0,
        }
    }
}

impl ComponentConfig for PprofConfig {
    fn validate(&self) -> Vec<(Vec<String>, String)> {
        let mut problems = super::check_endpoint(&self.endpoint);
        for (field, value) in [
            ("block_profile_fraction", self.block_profile_fraction),
            ("mutex_profile_fraction", self.mutex_profile_fraction),
        ] {
            if value != 0 {
                problems.push((
                    vec![field.into()],
                    format!(
                        "{field} profiles Go's runtime, which this collector does not have; only \
                         CPU profiles are served: remove it or set it to 0"
                    ),
                ));
            }
        }
        problems
    }
}

/// Samples per second of CPU time, as Go's profiler takes.
const FREQUENCY: i32 = 100;

/// The longest profile served, as a guard against a request that never ends.
const LONGEST: Duration = Duration::from_secs(600);

pub(super) fn router() -> axum::Router {
    axum::Router::new()
        .route(
            "/debug/pprof/",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    "<html><body><p>Profiles:</p><ul>\
                     <li><a href=\"profile?seconds=30\">profile</a>: CPU profile (?seconds=N, \
                     default 30)</li></ul></body></html>\n",
                )
            }),
        )
        .route("/debug/pprof/profile", get(profile))
}

async fn profile(Query(query): Query<HashMap<String, String>>) -> Response {
    let seconds = match query.get("seconds").map(|s| s.parse::<u64>()) {
        None | Some(Ok(0)) => 30,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            return (
                StatusCode::BAD_REQUEST,
                "seconds must be a whole number of seconds\n",
            )
                .into_response();
        }
    };
    let duration = Duration::from_secs(seconds);
    if duration > LONGEST {
        return (
            StatusCode::BAD_REQUEST,
            format!("profiles are at most {} s long\n", LONGEST.as_secs()),
        )
            .into_response();
    }
    let profiled = tokio::task::spawn_blocking(move || cpu_profile(duration)).await;
    match profiled {
        Ok(Ok(bytes)) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"profile\"",
                ),
            ],
            bytes,
        )
            .into_response(),
        Ok(Err(message)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("could not profile: {message}\n"),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("profiler failed: {e}\n"),
        )
            .into_response(),
    }
}

/// Profiles the whole process for `duration` and encodes the result.
pub fn cpu_profile(duration: Duration) -> Result<Vec<u8>, String> {
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(FREQUENCY)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .map_err(|e| match e {
            pprof::Error::Running => "another profile is being taken; try again later".into(),
            other => other.to_string(),
        })?;
    let started = SystemTime::now();
    std::thread::sleep(duration);
    let report = guard.report().build().map_err(|e| e.to_string())?;
    drop(guard);
    Ok(encode(&report, started, duration).encode_to_vec())
}

/// The pprof `Profile` message (profile.proto), with the fields written here.
#[derive(Clone, PartialEq, Message)]
pub struct Profile {
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    #[prost(int64, tag = "12")]
    pub period: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct ValueType {
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Label {
    #[prost(int64, tag = "1")]
    pub key: i64,
    #[prost(int64, tag = "2")]
    pub str: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Location {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Line {
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    #[prost(int64, tag = "2")]
    pub line: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Function {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(int64, tag = "2")]
    pub name: i64,
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    #[prost(int64, tag = "4")]
    pub filename: i64,
}

/// Interns strings into a profile's string table, whose first entry is the empty string.
#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn id(&mut self, text: &str) -> i64 {
        if self.table.is_empty() {
            self.table.push(String::new());
            self.index.insert(String::new(), 0);
        }
        if let Some(id) = self.index.get(text) {
            return *id;
        }
        let id = self.table.len() as i64;
        self.table.push(text.to_string());
        self.index.insert(text.to_string(), id);
        id
    }
}

fn encode(report: &pprof::Report, started: SystemTime, duration: Duration) -> Profile {
    let mut strings = Strings::default();
    let period = 1_000_000_000 / i64::from(FREQUENCY);
    let samples_type = ValueType {
        r#type: strings.id("samples"),
        unit: strings.id("count"),
    };
    let cpu_type = ValueType {
        r#type: strings.id("cpu"),
        unit: strings.id("nanoseconds"),
    };
    let thread = strings.id("thread");
    // One function and one location per distinct symbol (name, file, line).
    let mut locations: HashMap<(String, String, u32), u64> = HashMap::new();
    let mut profile = Profile {
        sample_type: vec![samples_type, cpu_type.clone()],
        time_nanos: started
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as i64,
        duration_nanos: duration.as_nanos() as i64,
        period_type: Some(cpu_type),
        period,
        ..Profile::default()
    };
    for (frames, count) in &report.data {
        let mut location_ids = Vec::new();
        // Innermost frame first, as pprof wants.
        for symbol in frames.frames.iter().flatten() {
            let key = (
                symbol.name(),
                symbol.filename().into_owned(),
                symbol.lineno(),
            );
            let next_id = locations.len() as u64 + 1;
            let id = *locations.entry(key.clone()).or_insert(next_id);
            if id == next_id {
                let function = Function {
                    id,
                    name: strings.id(&key.0),
                    system_name: strings.id(&symbol.sys_name()),
                    filename: strings.id(&key.1),
                };
                profile.function.push(function);
                profile.location.push(Location {
                    id,
                    line: vec![Line {
                        function_id: id,
                        line: i64::from(key.2),
                    }],
                });
            }
            location_ids.push(id);
        }
        let count = *count as i64;
        profile.sample.push(Sample {
            location_id: location_ids,
            value: vec![count, count * period],
            label: vec![Label {
                key: thread,
                str: strings.id(&frames.thread_name_or_id()),
            }],
        });
    }
    profile.string_table = std::mem::take(&mut strings.table);
    profile
}
