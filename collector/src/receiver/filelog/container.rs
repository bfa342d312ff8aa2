//! The `container` operator: the lines container runtimes write, and where the kubelet puts
//! them. CRI-O and containerd write `TIMESTAMP STREAM P|F LOG` (`P` for a piece of a longer
//! line, `F` for its last piece); Docker writes a JSON object per line, `{"log": ...,
//! "stream": ..., "time": ...}`, whose `log` ends with a newline only at a line's end. Files
//! at `/var/log/pods/<namespace>_<pod>_<uid>/<container>/<restart>.log` tell the pod.

use std::sync::LazyLock;

use regex::Regex;

use crate::receiver::rfc3339_nanos;

/// One line of a container's log file, read.
#[derive(Debug, PartialEq)]
pub struct Piece {
    /// When it was written, in nanoseconds since the epoch.
    pub time_unix_nano: u64,
    /// `stdout` or `stderr`.
    pub stream: Option<&'static str>,
    /// CRI's tag: `P` or `F`.
    pub tag: Option<&'static str>,
    pub log: Vec<u8>,
    /// Whether the line it belongs to ends here.
    pub last: bool,
}

/// Reads one line of a container's log file, in the format it is in; None when it is in
/// neither.
pub fn parse(line: &[u8]) -> Option<Piece> {
    if line.first() == Some(&b'{') {
        return docker(line);
    }
    // TIMESTAMP STREAM TAG LOG
    let mut fields = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(fields.next()?).ok()?;
    let stream = stream_name(std::str::from_utf8(fields.next()?).ok()?)?;
    let tag = fields.next()?;
    let log = fields.next().unwrap_or_default();
    // The tag may carry more flags after `:` in later CRI versions.
    let (tag, last) = match tag.split(|b| *b == b':').next()? {
        b"F" => ("F", true),
        b"P" => ("P", false),
        _ => return None,
    };
    Some(Piece {
        time_unix_nano: rfc3339_nanos(time)?,
        stream: Some(stream),
        tag: Some(tag),
        log: log.to_vec(),
        last,
    })
}

fn docker(line: &[u8]) -> Option<Piece> {
    #[derive(serde::Deserialize)]
    struct Line {
        log: String,
        #[serde(default)]
        stream: String,
        #[serde(default)]
        time: String,
    }
    let line: Line = serde_json::from_slice(line).ok()?;
    let last = line.log.ends_with('\n');
    let mut log = line.log.into_bytes();
    if last {
        log.pop();
    }
    Some(Piece {
        time_unix_nano: rfc3339_nanos(&line.time).unwrap_or(0),
        stream: stream_name(&line.stream),
        tag: None,
        log,
        last,
    })
}

/// `stdout` or `stderr`, the streams a runtime writes; None for anything else.
fn stream_name(stream: &str) -> Option<&'static str> {
    match stream {
        "stdout" => Some("stdout"),
        "stderr" => Some("stderr"),
        _ => None,
    }
}

/// The resource attributes of a file the kubelet keeps a container's log in, from its path:
/// `k8s.namespace.name`, `k8s.pod.name`, `k8s.pod.uid`, `k8s.container.name` and
/// `k8s.container.restart_count`. Empty for any other path.
pub fn pod_attributes(path: &str) -> Vec<(&'static str, String)> {
    static POD_LOG: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"/([^/_]+)_([^/_]+)_([0-9a-fA-F-]+)/([^/]+)/(\d+)\.log(?:\.[^/]*)?$")
            .expect("a valid regex")
    });
    let Some(found) = POD_LOG.captures(path) else {
        return Vec::new();
    };
    [
        "k8s.namespace.name",
        "k8s.pod.name",
        "k8s.pod.uid",
        "k8s.container.name",
        "k8s.container.restart_count",
    ]
    .into_iter()
    .zip(1..)
    .map(|(key, group)| (key, found[group].to_string()))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_lines_and_their_pieces() {
        let piece = parse(b"2024-05-01T10:00:00.123456789Z stdout P hello ").unwrap();
        assert_eq!(piece.time_unix_nano, 1_714_557_600_123_456_789);
        assert_eq!((piece.stream, piece.tag), (Some("stdout"), Some("P")));
        assert_eq!(piece.log, b"hello ");
        assert!(!piece.last);
        let last = parse(b"2024-05-01T10:00:00.2Z stderr F world").unwrap();
        assert_eq!(last.time_unix_nano, 1_714_557_600_200_000_000);
        assert_eq!(
            (last.stream, last.tag, &last.log[..], last.last),
            (Some("stderr"), Some("F"), &b"world"[..], true)
        );
        // An empty line is a line.
        assert_eq!(parse(b"2024-05-01T10:00:00Z stdout F").unwrap().log, b"");
        // With an offset.
        assert_eq!(
            parse(b"2024-05-01T12:00:00+02:00 stdout F x")
                .unwrap()
                .time_unix_nano,
            1_714_557_600_000_000_000
        );
        assert_eq!(parse(b"plain text"), None);
        assert_eq!(parse(b"2024-05-01T10:00:00Z stdin F x"), None);
    }

    #[test]
    fn docker_json_lines() {
        let piece =
            parse(br#"{"log":"hello\n","stream":"stderr","time":"2024-05-01T10:00:00.5Z"}"#)
                .unwrap();
        assert_eq!(piece.log, b"hello");
        assert!(piece.last);
        assert_eq!((piece.stream, piece.tag), (Some("stderr"), None));
        assert_eq!(piece.time_unix_nano, 1_714_557_600_500_000_000);
        let partial =
            parse(br#"{"log":"16k of it","stream":"stdout","time":"2024-05-01T10:00:00Z"}"#)
                .unwrap();
        assert!(!partial.last);
        assert_eq!(parse(br#"{"not":"docker"}"#), None);
    }

    #[test]
    fn the_kubelets_paths_name_the_pod() {
        let attributes = pod_attributes(
            "/var/log/pods/shop_checkout-5d9f7c-x2x_0f6c1c2e-1b2a-4c3d-9e8f-0123456789ab/app/3.log",
        );
        assert_eq!(
            attributes,
            [
                ("k8s.namespace.name", "shop".to_string()),
                ("k8s.pod.name", "checkout-5d9f7c-x2x".into()),
                ("k8s.pod.uid", "0f6c1c2e-1b2a-4c3d-9e8f-0123456789ab".into()),
                ("k8s.container.name", "app".into()),
                ("k8s.container.restart_count", "3".into()),
            ]
        );
        // Rotated by the kubelet, still the same container's.
        assert_eq!(
            pod_attributes("/var/log/pods/a_b_c1/d/0.log.20240501-100000").len(),
            5
        );
        assert!(pod_attributes("/var/log/syslog").is_empty());
    }
}
