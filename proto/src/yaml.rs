//! Everything that touches YAML, kept in one place so the YAML library can be swapped; shared
//! by the collector's config and the control plane's resources.

use std::time::Duration;

use serde::de::DeserializeOwned;
pub use serde_yaml::{Mapping, Value};

/// Parses a YAML document; the error carries the 1-based line when known.
pub fn parse(text: &str) -> Result<Value, (Option<usize>, String)> {
    serde_yaml::from_str(text).map_err(|e| (e.location().map(|l| l.line()), e.to_string()))
}

/// Writes `value` as a YAML document.
pub fn to_string<T: serde::Serialize>(value: &T) -> String {
    serde_yaml::to_string(value).expect("serializable to YAML")
}

/// `value` as a YAML value, its fields in the order they are declared.
pub fn to_value<T: serde::Serialize>(value: &T) -> Value {
    serde_yaml::to_value(value).unwrap_or_default()
}

/// Deserializes `value`; the error names the path of the offending field (`a.b[2].c`).
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, (Vec<String>, String)> {
    // A component written as `batch:` with nothing after it means "all defaults".
    let value = if value.is_null() {
        Value::Mapping(Default::default())
    } else {
        value
    };
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e
            .path()
            .iter()
            .filter_map(|seg| match seg {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                _ => None,
            })
            .collect();
        (path, e.into_inner().to_string())
    })
}

/// The YAML with secret values replaced by `[REDACTED]`, and everything else as it is, so a
/// config can be read and debugged without showing a credential:
///
/// - a value whose key names a credential (`password`, `client_secret`, `token`, `api_key`,
///   `authorization`, `key_pem`, ...; not `token_url` or `key_file`, which name where one is);
/// - a header whose name is credential-like (`authorization`, `x-api-key`, `dd-api-key`,
///   `x-honeycomb-team`, `x-sf-token`, `uptrace-dsn`, ...) or whose value is a credential
///   (`Bearer ...`, `Basic ...`, `Api-Token ...`); other headers (`dd-protocol`,
///   `x-scope-orgid`, `stream-name`) stay visible.
///
/// A value whose secret part is a reference (`${file:/run/secrets/token}`, `${env:TOKEN}`,
/// `Bearer ${file:...}`) is kept: it names where the secret is, not the secret. A reference with
/// a default (`${env:KEY:-...}`) is not, as the default may be the secret itself. Give it
/// unsubstituted text.
pub fn redact(text: &str) -> String {
    fn walk(value: &mut Value, hide: bool, in_headers: bool) {
        match value {
            Value::Mapping(map) => {
                for (key, item) in map.iter_mut() {
                    let name = key.as_str().unwrap_or("");
                    let hide_item = hide
                        || secret_key(name)
                        || (in_headers && (secret_header(name) || credential_value(item)));
                    walk(item, hide_item, !in_headers && name == "headers");
                }
            }
            Value::Sequence(items) => items.iter_mut().for_each(|item| walk(item, hide, false)),
            Value::Null => {}
            Value::String(s) if hide && references_only(s) => {}
            other if hide => *other = Value::String("[REDACTED]".into()),
            _ => {}
        }
    }
    match serde_yaml::from_str::<Value>(text) {
        Ok(mut value) => {
            walk(&mut value, false, false);
            serde_yaml::to_string(&value).unwrap_or_default()
        }
        Err(_) => String::new(),
    }
}

/// Whether a config key names a credential: it ends in one of the credential words.
fn secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase().replace('-', "_");
    [
        "password",
        "passwd",
        "secret",
        "token",
        "api_key",
        "apikey",
        "access_key",
        "private_key",
        "key_pem",
        "authorization",
        "credential",
        "credentials",
        "license_key",
    ]
    .iter()
    .any(|s| key.ends_with(s))
}

/// Whether a header's name says its value is a credential.
fn secret_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "auth",
        "token",
        "key",
        "secret",
        "password",
        "cookie",
        "credential",
        "signature",
        "session",
        "dsn",
        "x-honeycomb-team",
    ]
    .iter()
    .any(|s| name.contains(s))
}

/// Whether a header value reads as a credential (`Bearer ...`, `Basic ...`, ...).
fn credential_value(value: &Value) -> bool {
    let Some(text) = value.as_str() else {
        return false;
    };
    let scheme = text
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    text.contains(' ')
        && [
            "bearer",
            "basic",
            "api-token",
            "apikey",
            "token",
            "digest",
            "lumigotoken",
        ]
        .contains(&scheme.as_str())
}

/// Whether every part of `s` that could be a secret is a `${...}` reference (without a default):
/// `${file:/x}`, or a scheme word before one, as in `Bearer ${file:/x}`.
fn references_only(s: &str) -> bool {
    let mut rest = s.trim();
    if let Some((word, reference)) = rest.split_once(' ')
        && !word.contains('$')
    {
        rest = reference.trim();
    }
    only_reference(rest)
}

/// Whether `s` is exactly one `${...}` reference. One with a default is not: the default is
/// written out and may be the secret itself.
fn only_reference(s: &str) -> bool {
    s.strip_prefix("${")
        .and_then(|s| s.strip_suffix('}'))
        .is_some_and(|inner| !inner.contains(['$', '{', '}']) && !inner.contains(":-"))
}

/// Replaces references in every string of `value`: `${env:NAME}`, `${NAME}` and
/// `${env:NAME:-default}` with what `lookup` gives for NAME, and `${file:PATH}` with the file's
/// contents less one trailing newline; `$$` stands for a literal `$`. A string that is exactly
/// one reference is re-read as a YAML scalar, so `port: ${env:PORT}` becomes a number. Returns
/// `(path, problem)` for each string with a reference that cannot be resolved.
pub fn substitute_env(
    value: &mut Value,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Vec<(Vec<String>, String)> {
    let mut errors = Vec::new();
    substitute_at(value, lookup, &mut Vec::new(), &mut errors);
    errors
}

fn substitute_at(
    value: &mut Value,
    lookup: &dyn Fn(&str) -> Option<String>,
    path: &mut Vec<String>,
    errors: &mut Vec<(Vec<String>, String)>,
) {
    match value {
        Value::String(s) if s.contains('$') => match expand(s, lookup) {
            Ok(expanded) => {
                let whole = s.starts_with("${") && s.ends_with('}') && s.matches("${").count() == 1;
                *value = match serde_yaml::from_str::<Value>(&expanded) {
                    Ok(scalar @ (Value::Bool(_) | Value::Number(_))) if whole => scalar,
                    _ => Value::String(expanded),
                };
            }
            Err(problem) => errors.push((path.clone(), problem)),
        },
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                path.push(key.as_str().unwrap_or("?").to_string());
                substitute_at(item, lookup, path, errors);
                path.pop();
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(i.to_string());
                substitute_at(item, lookup, path, errors);
                path.pop();
            }
        }
        _ => {}
    }
}

fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(body) = rest.strip_prefix("${") {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unclosed reference in {s:?}"))?;
            let reference = &body[..end];
            rest = &body[end + 1..];
            if let Some(path) = reference.strip_prefix("file:") {
                out.push_str(&read_reference(path)?);
                continue;
            }
            let reference = reference.strip_prefix("env:").unwrap_or(reference);
            let (name, default) = match reference.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (reference, None),
            };
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(format!("invalid environment variable name {name:?}"));
            }
            match (lookup(name), default) {
                (Some(found), _) => out.push_str(&found),
                (None, Some(default)) => out.push_str(default),
                (None, None) => {
                    return Err(format!(
                        "environment variable {name} is not set (write ${{env:{name}:-default}} to give a default)"
                    ));
                }
            }
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// What a `${file:PATH}` reference stands for: the file's contents, less the one newline that
/// ends a file written by hand or by `echo`.
fn read_reference(path: &str) -> Result<String, String> {
    if path.is_empty() {
        return Err("${file:} names no file".into());
    }
    let mut text =
        std::fs::read_to_string(path).map_err(|e| format!("cannot read file {path}: {e}"))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

/// The 1-based line where the key (or list item, for a numeric segment) at `path` is written,
/// following block-style indentation. Falls back to the deepest ancestor found.
pub fn locate(text: &str, path: &[String]) -> Option<usize> {
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|(n, l)| (n + 1, l))
        .collect();
    let indent = |line: &str| line.len() - line.trim_start().len();
    let (mut found, mut at, mut parent): (Option<usize>, usize, Option<usize>) = (None, 0, None);
    // Whether the key may sit on the current line, after a list item's dash.
    let mut inline: Option<String> = None;
    for segment in path {
        if let Some(rest) = inline.take()
            && key_of(&rest) == Some(segment.as_str())
        {
            continue;
        }
        let mut hit = None;
        let mut items = 0;
        // The indentation of the parent's direct children: deeper lines belong to them.
        let mut children = None;
        for (i, (number, line)) in lines.iter().enumerate().skip(at) {
            let (depth, content) = (indent(line), line.trim_start());
            // A list may sit at its key's own indentation; anything else must be deeper.
            let inside =
                parent.is_none_or(|p| depth > p || (depth == p && content.starts_with("- ")));
            if !inside {
                break;
            }
            if *children.get_or_insert(depth) < depth && !content.starts_with("- ") {
                continue;
            }
            if let Ok(index) = segment.parse::<usize>() {
                if content.starts_with("- ") || content == "-" {
                    if items == index {
                        hit = Some((i, *number, depth, content[1..].trim_start().to_string()));
                        break;
                    }
                    items += 1;
                }
            } else if key_of(content.trim_start_matches("- ")) == Some(segment.as_str()) {
                hit = Some((i, *number, depth, String::new()));
                break;
            }
        }
        let Some((i, number, depth, rest)) = hit else {
            break;
        };
        found = Some(number);
        at = i + 1;
        parent = Some(depth);
        inline = Some(rest);
    }
    found
}

fn key_of(content: &str) -> Option<&str> {
    content.contains(':').then(|| {
        content
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches(['"', '\''])
    })
}

/// Reads durations written as `200ms`, `5s`, `1m30s`, `2h`, or a number of seconds.
pub mod duration {
    use super::*;
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Seconds(s) if s >= 0.0 => Ok(Duration::from_secs_f64(s)),
            Raw::Seconds(s) => Err(serde::de::Error::custom(format!("negative duration {s}"))),
            Raw::Text(text) => parse(&text).map_err(serde::de::Error::custom),
        }
    }

    pub fn parse(text: &str) -> Result<Duration, String> {
        let bad = || format!("invalid duration {text:?} (write e.g. 200ms, 5s, 1m30s)");
        let mut total = Duration::ZERO;
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err(bad());
        }
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(bad)?;
            let number: f64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let scale = match &rest[..unit_len] {
                "ns" => 1e-9,
                "us" | "µs" => 1e-6,
                "ms" => 1e-3,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(bad()),
            };
            total += Duration::from_secs_f64(number * scale);
            rest = &rest[unit_len..];
        }
        Ok(total)
    }
}

/// Reads sizes written as otelcol's: a number of bytes, or a number with a unit (`1kb`,
/// `1KiB`, `16MiB`, `2 GB`; decimal and binary units, any case).
pub mod byte_size {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(n) => Ok(n),
            Raw::Text(text) => parse(&text).map_err(serde::de::Error::custom),
        }
    }

    pub fn parse(text: &str) -> Result<u64, String> {
        let bad = || format!("invalid size {text:?} (write e.g. 1024, 1kb, 16KiB, 1MiB)");
        let text = text.trim();
        let digits = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let number: f64 = text[..digits].parse().map_err(|_| bad())?;
        let scale: f64 = match text[digits..].trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "kb" | "k" => 1e3,
            "mb" | "m" => 1e6,
            "gb" | "g" => 1e9,
            "kib" | "ki" => 1024.0,
            "mib" | "mi" => 1024.0 * 1024.0,
            "gib" | "gi" => 1024.0 * 1024.0 * 1024.0,
            _ => return Err(bad()),
        };
        Ok((number * scale) as u64)
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn sizes_read_as_otelcol_writes_them() {
            for (text, bytes) in [
                ("1024", 1024),
                ("1kb", 1000),
                ("1KiB", 1024),
                ("16MiB", 16 << 20),
                ("2 MB", 2_000_000),
            ] {
                assert_eq!(super::parse(text), Ok(bytes), "{text}");
            }
            assert!(super::parse("ten").unwrap_err().contains("1MiB"));
            assert!(super::parse("1 parsec").is_err());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PORT" => Some("4317".into()),
            "HOST" => Some("collector".into()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_environment() {
        let mut v =
            parse("a: ${env:PORT}\nb: http://${HOST}:${env:PORT}/x\nc: ${env:NOPE:-dflt}\nd: $$5")
                .unwrap();
        assert!(substitute_env(&mut v, &env).is_empty());
        assert_eq!(v["a"], Value::Number(4317.into()));
        assert_eq!(v["b"], Value::String("http://collector:4317/x".into()));
        assert_eq!(v["c"], Value::String("dflt".into()));
        assert_eq!(v["d"], Value::String("$5".into()));
        let mut v = parse("x:\n  y: ${env:MISSING}").unwrap();
        let errors = substitute_env(&mut v, &env);
        assert_eq!(errors[0].0, vec!["x", "y"]);
        assert!(
            errors[0].1.contains("MISSING is not set"),
            "{}",
            errors[0].1
        );
    }

    /// A file under the system temp folder, removed when dropped.
    struct TempFile(std::path::PathBuf);

    impl TempFile {
        fn new(name: &str, contents: &str) -> TempFile {
            let path =
                std::env::temp_dir().join(format!("odigos-yaml-{}-{name}", std::process::id()));
            std::fs::write(&path, contents).unwrap();
            TempFile(path)
        }

        fn path(&self) -> String {
            self.0.display().to_string()
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn substitutes_files() {
        let token = TempFile::new("token", "s3cr3t\n");
        let port = TempFile::new("port", "4317");
        let lines = TempFile::new("lines", "a\nb\n\n");
        let text = format!(
            "token: ${{file:{}}}\nport: ${{file:{}}}\nauth: Bearer ${{file:{}}}\nlines: ${{file:{}}}\nmixed: ${{env:HOST}}-${{file:{}}}",
            token.path(),
            port.path(),
            token.path(),
            lines.path(),
            port.path()
        );
        let mut v = parse(&text).unwrap();
        assert_eq!(substitute_env(&mut v, &env), []);
        assert_eq!(v["token"], Value::String("s3cr3t".into()));
        assert_eq!(v["port"], Value::Number(4317.into()));
        assert_eq!(v["auth"], Value::String("Bearer s3cr3t".into()));
        // Only one newline is trimmed.
        assert_eq!(v["lines"], Value::String("a\nb\n".into()));
        assert_eq!(v["mixed"], Value::String("collector-4317".into()));
    }

    #[test]
    fn unreadable_file_is_an_error_naming_it() {
        let missing = std::env::temp_dir().join("odigos-yaml-no-such-file");
        let text = format!(
            "exporters:\n  otlp:\n    headers:\n      x-key: ${{file:{}}}\nok: ${{env:HOST}}",
            missing.display()
        );
        let mut v = parse(&text).unwrap();
        let errors = substitute_env(&mut v, &env);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, ["exporters", "otlp", "headers", "x-key"]);
        assert!(
            errors[0]
                .1
                .starts_with(&format!("cannot read file {}:", missing.display())),
            "{}",
            errors[0].1
        );
        assert_eq!(v["ok"], Value::String("collector".into()));
        let mut v = parse("a: ${file:}").unwrap();
        assert_eq!(substitute_env(&mut v, &env)[0].1, "${file:} names no file");
    }

    #[test]
    fn redaction_keeps_references_not_secrets() {
        let text = "headers:\n  x-api-key: ${file:/run/secrets/key}\n  x-env: ${env:KEY}\n  x-token-default: ${env:KEY:-fallback}\n  authorization: Bearer ${file:/run/secrets/key}\n  x-token: abc\n  x-mixed: Bearer abc${file:/k}\n";
        let redacted = redact(text);
        assert!(
            redacted.contains("x-api-key: ${file:/run/secrets/key}"),
            "{redacted}"
        );
        assert!(redacted.contains("x-env: ${env:KEY}"), "{redacted}");
        assert!(
            redacted.contains("authorization: Bearer ${file:/run/secrets/key}"),
            "{redacted}"
        );
        assert!(!redacted.contains("fallback"), "{redacted}");
        assert!(!redacted.contains("abc"), "{redacted}");
        assert_eq!(redacted.matches("[REDACTED]").count(), 3, "{redacted}");
    }

    #[test]
    fn redaction_shows_what_is_not_secret() {
        let text = "exporters:\n  otlphttp/dd:\n    traces_endpoint: https://trace.agent.datadoghq.com/v1/traces\n    headers:\n      dd-api-key: k3y\n      dd-protocol: otlp\n      X-Scope-OrgID: tenant-a\n      x-honeycomb-team: h0ney\n      X-SF-Token: sf\n      x-custom: Basic dXNlcjpwYXNz\n    tls:\n      ca_pem: CERT\n      key_pem: PRIVATE\n      key_file: /etc/key.pem\nextensions:\n  oauth2client:\n    client_id: app\n    client_secret: s3cr3t\n    token_url: https://idp/token\n";
        let redacted = redact(text);
        for shown in [
            "dd-protocol: otlp",
            "X-Scope-OrgID: tenant-a",
            "ca_pem: CERT",
            "key_file: /etc/key.pem",
            "client_id: app",
            "token_url: https://idp/token",
            "traces_endpoint: https://trace.agent.datadoghq.com/v1/traces",
        ] {
            assert!(redacted.contains(shown), "{shown} hidden in {redacted}");
        }
        for hidden in ["k3y", "h0ney", ": sf", "dXNlcjpwYXNz", "PRIVATE", "s3cr3t"] {
            assert!(!redacted.contains(hidden), "{hidden} shown in {redacted}");
        }
    }

    #[test]
    fn locates_nested_keys() {
        let text = "receivers:\n  otlp:\n    protocols:\n      grpc:\n\nprocessors:\n  # comment\n  batch/fast:\n    timeout: 1s\n  attributes:\n    actions:\n      - key: a\n";
        let path = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            locate(text, &path(&["receivers", "otlp", "protocols", "grpc"])),
            Some(4)
        );
        assert_eq!(
            locate(text, &path(&["processors", "batch/fast", "timeout"])),
            Some(9)
        );
        assert_eq!(
            locate(text, &path(&["processors", "batch/fast", "nope"])),
            Some(8)
        );
        assert_eq!(
            locate(text, &path(&["processors", "attributes", "actions"])),
            Some(11)
        );
        assert_eq!(
            locate(text, &path(&["processors", "attributes", "actions", "0"])),
            Some(12)
        );
        assert_eq!(
            locate(
                text,
                &path(&["processors", "attributes", "actions", "0", "key"])
            ),
            Some(12)
        );
        let nested = "service:\n  pipelines:\n    traces:\n      extra: 1\n  extra: 2\n";
        assert_eq!(locate(nested, &path(&["service", "extra"])), Some(5));
        let list = "a:\n- x: 1\n- x: 2\n  y: 3\nb: 1\n";
        assert_eq!(locate(list, &path(&["a", "1", "y"])), Some(4));
        assert_eq!(locate(list, &path(&["b"])), Some(5));
    }

    #[test]
    fn redacts_secrets() {
        let text = "exporters:\n  otlp:\n    endpoint: http://x:4317\n    headers:\n      x-api: abc\n      authorization: t0k\n  o2:\n    api_key: k\n    auth_token: t\nprocessors:\n  attributes:\n    actions: [{key: user.id, action: delete}]\n";
        let redacted = redact(text);
        assert!(
            !redacted.contains("t0k") && !redacted.contains(": k") && !redacted.contains(": t\n"),
            "{redacted}"
        );
        assert!(redacted.contains("endpoint: http://x:4317"), "{redacted}");
        assert!(redacted.contains("x-api: abc"), "{redacted}");
        assert!(redacted.contains("key: user.id"), "{redacted}");
        assert_eq!(redacted.matches("[REDACTED]").count(), 3, "{redacted}");
    }

    #[test]
    fn parses_durations() {
        assert_eq!(duration::parse("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(duration::parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration::parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(duration::parse("5 parsecs").is_err());
        assert!(duration::parse("").is_err());
    }
}
