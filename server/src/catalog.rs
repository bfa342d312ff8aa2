//! The destinations catalog: one YAML descriptor per destination type (`server/catalog/*.yaml`,
//! embedded in the binary), saying which fields a Destination of that type has and which
//! collector exporter it becomes. Types, field names, required and secret flags, defaults and
//! select values are those of Odigos's descriptor of the same type, so its manifests apply.
//!
//! A field has a `type`: `string`, `url`, `number`, `boolean` (`true` or `false`; also `1`,
//! `t`, `TRUE`, `0`, `f`, `FALSE`, ... as Go reads booleans), `select` (one of `values`),
//! `headers` (Odigos's key/value list: a JSON list of `{"key": .., "value": ..}`, or a JSON or
//! YAML map), `list` (a JSON list of strings) or `pem` (PEM text, e.g. a CA certificate).
//! A field that Odigos has and this collector cannot act on yet carries `ignored: <why>` (it is
//! accepted, has no effect, and [`DestinationType::ignored`] lists it for the status) or
//! `unsupported: <why>` (a value other than its default is refused with that reason).
//!
//! A descriptor's `exporter.config` is the exporter's config with `{{...}}` placeholders:
//!
//! - `{{FIELD}}` is the field's text, anywhere in a string;
//! - `{{base64:USER:PASSWORD}}` is the base64 of both values joined by `:` (HTTP basic
//!   credentials);
//! - `{{grpc:FIELD}}` is an OTLP/gRPC address as Odigos reads it: `host:port`, with port 4317
//!   when none is given (`{{grpc:FIELD:8200}}` names another default). `grpc://` and `http://`
//!   are dropped, so TLS follows `tls.insecure`; `grpcs://` and `https://` become `https://`,
//!   which is always TLS;
//! - `{{address:FIELD:PORT}}` is an address with its scheme (`grpc://` read as `http://`,
//!   `grpcs://` as `https://`) and path, with PORT when it names no port
//!   (`{{address:FIELD:PORT:/PATH}}`: and /PATH when it names no path); `{{http:...}}` is the
//!   same with `http://` for an address written without a scheme;
//! - `{{base:FIELD}}` is a Prometheus URL's base: `http://` when it has no scheme, and without
//!   a remote-write path (`/api/v1/write`, `/api/v1/push`);
//! - `{{hostport:FIELD:PORT}}` is the bare `host:port` of an address, whatever its scheme and
//!   path, with PORT when it has none;
//! - a string that is exactly `{{bool:FIELD}}` or `{{not:FIELD}}` becomes a YAML boolean, the
//!   field's value or its negation (`tls: {insecure: "{{not:OTLP_GRPC_TLS_ENABLED}}"}`);
//! - a string that is exactly `{{headers:FIELD}}` becomes a map of the field's headers; as a
//!   map key (`"{{headers:FIELD}}": {}`) its headers join that map's other entries;
//! - a map key `"{{if:FIELD}}"` holds entries that join its map only when the field is set:
//!   a boolean that is true, or any other non-empty value
//!   (`"{{if:OTLP_GRPC_TLS_ENABLED}}": {ca_pem: "{{OTLP_GRPC_CA_PEM}}"}`); later entries win.
//!
//! A value that names an optional field without a value is dropped with its map entry, so
//! optional settings vanish cleanly. A value that takes in a secret field is replaced by a file
//! reference (see [`DestinationType::render`]); a header map from a secret field is sealed value
//! by value.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use base64::prelude::{BASE64_STANDARD, Engine as _};
use odigos_proto::yaml::{self, Value};
use serde::{Deserialize, Serialize};

use crate::resource::Signal;

const FILES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/catalog.rs"));

/// One destination type.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationType {
    #[serde(rename = "type")]
    pub name: String,
    pub display_name: String,
    /// `managed` or `self hosted`.
    pub category: String,
    pub signals: Vec<Signal>,
    #[serde(default)]
    pub fields: Vec<Field>,
    pub exporter: ExporterTemplate,
}

/// A field a Destination of this type fills in, under `data` (or in its Secret).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Field {
    pub name: String,
    pub display_name: String,
    #[serde(rename = "type")]
    pub kind: FieldKind,
    #[serde(default)]
    pub required: bool,
    /// Never written into configs: the compiler references a file holding it.
    #[serde(default)]
    pub secret: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tooltip: Option<String>,
    /// The allowed values of a `select`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Accepted for Odigos's sake but without effect here, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignored: Option<String>,
    /// Not available here, and why: a value other than the default is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsupported: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldKind {
    String,
    Url,
    Number,
    Boolean,
    Select,
    /// Odigos's key/value pairs: a JSON list of `{"key", "value"}`, or a map.
    Headers,
    /// A JSON list of strings.
    List,
    /// PEM text.
    Pem,
}

/// The collector exporter a destination becomes.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExporterTemplate {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub config: Value,
    /// Settings for one signal, merged over `config` (a header that names the signal, a token
    /// of its own). A type with any becomes one exporter per signal.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub signals: BTreeMap<Signal, Value>,
}

/// A boolean as Go's `strconv.ParseBool` reads it, which is how Odigos reads its fields.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Header pairs from Odigos's key/value field: a JSON list of `{"key": .., "value": ..}` (as
/// Odigos writes it), or a JSON or YAML map.
pub fn parse_headers(value: &str) -> Result<Vec<(String, String)>, String> {
    #[derive(Deserialize)]
    struct Pair {
        key: String,
        value: String,
    }
    if value.trim().is_empty() {
        return Ok(Vec::new());
    }
    if let Ok(pairs) = serde_json::from_str::<Vec<Pair>>(value) {
        return Ok(pairs.into_iter().map(|p| (p.key, p.value)).collect());
    }
    match yaml::parse(value)
        .ok()
        .and_then(|v| yaml::from_value::<BTreeMap<String, String>>(v).ok())
    {
        Some(map) => Ok(map.into_iter().collect()),
        None => Err(format!(
            "{value:?} is not a list of headers: write [{{\"key\": \"name\", \"value\": \"text\"}}, ...]"
        )),
    }
}

impl Field {
    /// Why `value` is not acceptable for this field, if it is not. A secret's value never
    /// appears in the answer.
    pub fn check(&self, value: &str) -> Result<(), String> {
        let shown = |value: &str| {
            if self.secret {
                "the value".to_string()
            } else {
                format!("{value:?}")
            }
        };
        if let Some(why) = &self.unsupported
            && !value.is_empty()
            && Some(value) != self.default.as_deref()
            && parse_bool(value) != Some(false)
        {
            return Err(format!("{} is not supported yet: {why}", shown(value)));
        }
        match self.kind {
            FieldKind::String => Ok(()),
            FieldKind::Url => {
                let rest = value.split_once("://").map_or(value, |(_, rest)| rest);
                let host = rest.split(['/', ':']).next().unwrap_or("");
                if host.is_empty() || value.contains(char::is_whitespace) {
                    Err(format!("{} is not a URL or host:port", shown(value)))
                } else {
                    Ok(())
                }
            }
            FieldKind::Number => value
                .parse::<f64>()
                .map(drop)
                .map_err(|_| format!("{} is not a number", shown(value))),
            FieldKind::Boolean => match parse_bool(value) {
                Some(_) => Ok(()),
                None => Err(format!("{} is not true or false", shown(value))),
            },
            FieldKind::Select if self.values.iter().any(|v| v == value) => Ok(()),
            FieldKind::Select => Err(format!(
                "{} is not one of {}",
                shown(value),
                self.values.join(", ")
            )),
            FieldKind::Headers => parse_headers(value).map(drop).map_err(|e| {
                if self.secret {
                    "is not a list of headers".to_string()
                } else {
                    e
                }
            }),
            FieldKind::List => serde_json::from_str::<Vec<String>>(value)
                .map(drop)
                .map_err(|_| format!("{} is not a JSON list of strings", shown(value))),
            FieldKind::Pem => {
                if value.contains("-----BEGIN ") && value.contains("-----END ") {
                    Ok(())
                } else {
                    Err("is not PEM text (-----BEGIN ...----- ... -----END ...-----)".into())
                }
            }
        }
    }
}

impl DestinationType {
    /// The field named `name`.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The fields given a value in `values` that have no effect here, each with why.
    pub fn ignored<'a>(
        &'a self,
        values: &'a BTreeMap<String, String>,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.fields.iter().filter_map(|f| {
            let why = f.ignored.as_deref()?;
            let given = values.get(&f.name)?;
            (Some(given) != f.default.as_ref()).then_some((f.name.as_str(), why))
        })
    }

    /// The exporter config with every placeholder replaced by `values` (field name → text).
    /// A string that takes in a secret field is passed through `seal`, whose answer (a file
    /// reference) is written instead, so no secret reaches the config.
    pub fn render(
        &self,
        values: &BTreeMap<String, String>,
        seal: &mut dyn FnMut(String) -> String,
    ) -> Value {
        self.render_for(None, values, seal)
    }

    /// The exporter config for `signal`: `config` with that signal's settings merged over it.
    pub fn render_for(
        &self,
        signal: Option<Signal>,
        values: &BTreeMap<String, String>,
        seal: &mut dyn FnMut(String) -> String,
    ) -> Value {
        let secret = |name: &str| self.field(name).is_some_and(|f| f.secret);
        let mut config =
            render(&self.exporter.config, values, &secret, seal).unwrap_or(Value::Null);
        let overlay = signal.and_then(|s| self.exporter.signals.get(&s));
        if let Some(overlay) = overlay.and_then(|o| render(o, values, &secret, seal)) {
            merge(&mut config, overlay);
        }
        config
    }
}

/// Merges `overlay` into `base`: maps key by key, anything else replaced.
fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Mapping(base), Value::Mapping(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, overlay) => *base = overlay,
    }
}

/// `value` with placeholders filled, or `None` when it names a field without a value.
fn render(
    value: &Value,
    values: &BTreeMap<String, String>,
    secret: &dyn Fn(&str) -> bool,
    seal: &mut dyn FnMut(String) -> String,
) -> Option<Value> {
    match value {
        Value::String(text) => {
            if let Some(typed) = whole(text) {
                return typed_value(typed, values, secret, seal);
            }
            let filled = fill(text, values)?;
            let sealed = placeholder_fields(text).iter().any(|f| secret(f));
            Some(Value::String(if sealed { seal(filled) } else { filled }))
        }
        Value::Mapping(map) => {
            let mut out = yaml::Mapping::new();
            for (key, item) in map {
                if let Some(merged) = key.as_str().and_then(whole) {
                    let extra = match merged.strip_prefix("if:") {
                        Some(field) if truthy(values.get(field)) => {
                            render(item, values, secret, seal)
                        }
                        Some(_) => None,
                        None => typed_value(merged, values, secret, seal),
                    };
                    if let Some(Value::Mapping(extra)) = extra {
                        out.extend(extra);
                    }
                    continue;
                }
                if let Some(item) = render(item, values, secret, seal) {
                    out.insert(key.clone(), item);
                }
            }
            Some(Value::Mapping(out))
        }
        Value::Sequence(items) => Some(Value::Sequence(
            items
                .iter()
                .filter_map(|v| render(v, values, secret, seal))
                .collect(),
        )),
        other => Some(other.clone()),
    }
}

/// The placeholder of a string that is exactly one typed placeholder (`bool:`, `not:`,
/// `headers:`), which renders to a non-string value.
fn whole(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?.trim();
    let typed = ["bool:", "not:", "headers:", "if:"]
        .iter()
        .any(|p| inner.starts_with(p));
    (typed && !inner.contains("{{")).then_some(inner)
}

/// Whether a field's value counts as set for `{{if:FIELD}}`: a boolean that is true, or any
/// other non-empty text.
fn truthy(value: Option<&String>) -> bool {
    value.is_some_and(|v| parse_bool(v).unwrap_or(!v.trim().is_empty()))
}

fn typed_value(
    placeholder: &str,
    values: &BTreeMap<String, String>,
    secret: &dyn Fn(&str) -> bool,
    seal: &mut dyn FnMut(String) -> String,
) -> Option<Value> {
    let (function, field) = placeholder.split_once(':')?;
    let value = values.get(field)?;
    match function {
        "bool" => Some(Value::Bool(parse_bool(value)?)),
        "not" => Some(Value::Bool(!parse_bool(value)?)),
        "headers" => {
            let pairs = parse_headers(value).ok()?;
            let hidden = secret(field);
            Some(Value::Mapping(
                pairs
                    .into_iter()
                    .map(|(k, v)| {
                        let v = if hidden { seal(v) } else { v };
                        (Value::String(k), Value::String(v))
                    })
                    .collect(),
            ))
        }
        _ => None,
    }
}

/// The placeholders of `text`, between `{{` and `}}`.
fn placeholders_of(text: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let Some(end) = rest[start..].find("}}") else {
            break;
        };
        found.push(rest[start + 2..start + end].trim());
        rest = &rest[start + end + 2..];
    }
    found
}

/// The fields a text's placeholders name.
fn placeholder_fields(text: &str) -> Vec<&str> {
    placeholders_of(text)
        .into_iter()
        .flat_map(|p| match p.split_once(':') {
            Some(("base64", args)) => args.split(':').collect(),
            Some((_, args)) => vec![args.split(':').next().unwrap_or(args)],
            None => vec![p],
        })
        .collect()
}

/// `address` as `(scheme, host:port, path)`, the scheme lowercased and empty when absent.
fn split_address(address: &str) -> (String, &str, &str) {
    let address = address.trim();
    let (scheme, rest) = match address.split_once("://") {
        Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
        None => (String::new(), address),
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    (scheme, authority, path)
}

/// `host:port`, with `port` when the address names none (IPv6 hosts in brackets).
fn with_port(authority: &str, port: &str) -> String {
    let has_port = match authority.rfind(']') {
        Some(i) => authority[i + 1..].starts_with(':'),
        None => authority.contains(':'),
    };
    if has_port || port.is_empty() {
        authority.to_string()
    } else {
        format!("{authority}:{port}")
    }
}

/// The text of one placeholder, or `None` when a field it names has no value.
fn expand(placeholder: &str, values: &BTreeMap<String, String>) -> Option<String> {
    let Some((function, args)) = placeholder.split_once(':') else {
        return values.get(placeholder).cloned();
    };
    let mut args = args.split(':');
    let field = args.next().unwrap_or("");
    match function {
        "base64" => {
            let joined: Option<Vec<&str>> = std::iter::once(field)
                .chain(args)
                .map(|f| values.get(f).map(String::as_str))
                .collect();
            Some(BASE64_STANDARD.encode(joined?.join(":")))
        }
        "grpc" => {
            let (scheme, authority, _) = split_address(values.get(field)?);
            let address = with_port(authority, args.next().unwrap_or("4317"));
            Some(match scheme.as_str() {
                "https" | "grpcs" => format!("https://{address}"),
                _ => address,
            })
        }
        "address" | "http" => {
            let (scheme, authority, path) = split_address(values.get(field)?);
            let address = with_port(authority, args.next().unwrap_or(""));
            let path = match args.next() {
                Some(default) if path.is_empty() || path == "/" => default,
                _ => path,
            };
            Some(match scheme.as_str() {
                "" if function == "http" => format!("http://{address}{path}"),
                "" => format!("{address}{path}"),
                "grpc" => format!("http://{address}{path}"),
                "grpcs" => format!("https://{address}{path}"),
                scheme => format!("{scheme}://{address}{path}"),
            })
        }
        "base" => {
            let text = values.get(field)?.trim().trim_end_matches('/');
            let text = ["/api/v1/write", "/api/v1/push"]
                .iter()
                .find_map(|s| text.strip_suffix(s))
                .unwrap_or(text);
            Some(match text.contains("://") {
                true => text.to_string(),
                false => format!("http://{text}"),
            })
        }
        "hostport" => {
            let (_, authority, _) = split_address(values.get(field)?);
            Some(with_port(authority, args.next().unwrap_or("")))
        }
        _ => values.get(placeholder).cloned(),
    }
}

fn fill(text: &str, values: &BTreeMap<String, String>) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let end = rest[start..].find("}}")? + start;
        out.push_str(&rest[..start]);
        out.push_str(&expand(rest[start + 2..end].trim(), values)?);
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    Some(out)
}

/// The fields named by placeholders anywhere in `value`, map keys included.
fn placeholders(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::String(text) => into.extend(placeholder_fields(text).into_iter().map(String::from)),
        Value::Mapping(map) => {
            for (key, item) in map {
                if let Some(key) = key.as_str() {
                    into.extend(placeholder_fields(key).into_iter().map(String::from));
                }
                placeholders(item, into);
            }
        }
        Value::Sequence(items) => items.iter().for_each(|v| placeholders(v, into)),
        _ => {}
    }
}

/// Every string in `value`, map keys included.
fn strings(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::String(text) => into.push(text.clone()),
        Value::Mapping(map) => {
            for (key, item) in map {
                strings(key, into);
                strings(item, into);
            }
        }
        Value::Sequence(items) => items.iter().for_each(|v| strings(v, into)),
        _ => {}
    }
}

/// Every destination type, by name.
#[derive(Debug)]
pub struct Catalog {
    types: BTreeMap<String, DestinationType>,
}

impl Catalog {
    /// The catalog built into the binary.
    pub fn builtin() -> &'static Catalog {
        static CATALOG: OnceLock<Catalog> = OnceLock::new();
        CATALOG.get_or_init(|| {
            Catalog::parse(FILES.iter().copied()).unwrap_or_else(|errors| {
                panic!(
                    "the built-in destination catalog is invalid:\n{}",
                    errors.join("\n")
                )
            })
        })
    }

    /// Reads descriptors given as (file name, text); every problem is reported.
    pub fn parse<'a>(
        files: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Catalog, Vec<String>> {
        let mut types = BTreeMap::new();
        let mut errors = Vec::new();
        for (file, text) in files {
            let descriptor: DestinationType = match yaml::parse(text)
                .map_err(|(line, e)| format!("{file}:{}: {e}", line.unwrap_or(1)))
                .and_then(|v| {
                    yaml::from_value(v).map_err(|(path, e)| {
                        let line = yaml::locate(text, &path).unwrap_or(1);
                        format!("{file}:{line}: {}: {e}", path.join("."))
                    })
                }) {
                Ok(descriptor) => descriptor,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let mut named = Vec::new();
            placeholders(&descriptor.exporter.config, &mut named);
            for name in named {
                if descriptor.field(&name).is_none() {
                    errors.push(format!(
                        "{file}: exporter.config names {{{{{name}}}}}, which is not a field"
                    ));
                }
            }
            for (function, kinds) in [
                ("bool:", &[FieldKind::Boolean][..]),
                ("not:", &[FieldKind::Boolean]),
                ("headers:", &[FieldKind::Headers]),
                (
                    "grpc:",
                    &[FieldKind::Url, FieldKind::Select, FieldKind::String],
                ),
                (
                    "hostport:",
                    &[FieldKind::Url, FieldKind::Select, FieldKind::String],
                ),
                (
                    "address:",
                    &[FieldKind::Url, FieldKind::Select, FieldKind::String],
                ),
                (
                    "http:",
                    &[FieldKind::Url, FieldKind::Select, FieldKind::String],
                ),
                (
                    "base:",
                    &[FieldKind::Url, FieldKind::Select, FieldKind::String],
                ),
            ] {
                let mut texts = Vec::new();
                strings(&descriptor.exporter.config, &mut texts);
                for text in texts {
                    for placeholder in placeholders_of(&text) {
                        let Some(name) = placeholder
                            .strip_prefix(function)
                            .and_then(|args| args.split(':').next())
                        else {
                            continue;
                        };
                        if let Some(field) = descriptor.field(name)
                            && !kinds.contains(&field.kind)
                        {
                            errors.push(format!(
                                "{file}: {{{{{placeholder}}}}} needs a field of type {:?}",
                                kinds[0]
                            ));
                        }
                    }
                }
            }
            for field in &descriptor.fields {
                if let Some(default) = &field.default
                    && let Err(e) = field.check(default)
                {
                    errors.push(format!("{file}: field {}: default {e}", field.name));
                }
            }
            if types.insert(descriptor.name.clone(), descriptor).is_some() {
                errors.push(format!("{file}: a second descriptor for this type"));
            }
        }
        if errors.is_empty() {
            Ok(Catalog { types })
        } else {
            Err(errors)
        }
    }

    pub fn get(&self, name: &str) -> Option<&DestinationType> {
        self.types.get(name)
    }

    pub fn types(&self) -> impl Iterator<Item = &DestinationType> {
        self.types.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_is_valid_and_large_enough() {
        let catalog = Catalog::builtin();
        assert!(
            catalog.types().count() >= 25,
            "{} types",
            catalog.types().count()
        );
        for name in [
            "otlp",
            "otlphttp",
            "file",
            "debug",
            "honeycomb",
            "loki",
            "prometheus",
        ] {
            assert!(catalog.get(name).is_some(), "{name} missing");
        }
    }

    #[test]
    fn optional_placeholders_drop_their_entry() {
        let descriptor: DestinationType = yaml::from_value(
            yaml::parse(
                "type: t\ndisplayName: T\ncategory: managed\nsignals: [TRACES]\nfields:\n  - {name: URL, displayName: U, type: url, required: true}\n  - {name: KEY, displayName: K, type: string, secret: true}\nexporter:\n  type: otlphttp\n  config:\n    endpoint: \"{{URL}}/otlp\"\n    headers:\n      x-key: \"Bearer {{KEY}}\"\n",
            )
            .unwrap(),
        )
        .unwrap();
        let with_url = BTreeMap::from([("URL".to_string(), "http://h:1".to_string())]);
        let mut sealed = Vec::new();
        let mut seal = |text: String| {
            sealed.push(text);
            "${file:/s/k}".to_string()
        };
        assert_eq!(
            yaml::to_string(&descriptor.render(&with_url, &mut seal)),
            "endpoint: http://h:1/otlp\nheaders: {}\n"
        );
        let mut both = with_url.clone();
        both.insert("KEY".into(), "k3y".into());
        let rendered = yaml::to_string(&descriptor.render(&both, &mut seal));
        assert!(rendered.contains("x-key: ${file:/s/k}"), "{rendered}");
        assert_eq!(sealed, ["Bearer k3y"]);
    }

    #[test]
    fn basic_credentials_are_base64() {
        let values = BTreeMap::from([
            ("USER".to_string(), "123".to_string()),
            ("TOKEN".to_string(), "glc_x".to_string()),
        ]);
        assert_eq!(
            fill("Basic {{base64:USER:TOKEN}}", &values).unwrap(),
            "Basic MTIzOmdsY194"
        );
        assert_eq!(
            placeholder_fields("{{base64:USER:TOKEN}} {{URL}}"),
            ["USER", "TOKEN", "URL"]
        );
    }

    fn descriptor(fields: &str, config: &str) -> DestinationType {
        let text = format!(
            "type: t\ndisplayName: T\ncategory: managed\nsignals: [TRACES]\nfields:\n{fields}exporter:\n  type: otlp\n  config:\n{config}"
        );
        let files = [("t.yaml", text.as_str())];
        let catalog = Catalog::parse(files).unwrap_or_else(|e| panic!("{e:?}"));
        catalog.get("t").unwrap().clone()
    }

    fn rendered(kind: &DestinationType, values: &[(&str, &str)]) -> String {
        let values = values
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        yaml::to_string(&kind.render(&values, &mut |_| "${file:/s}".to_string()))
    }

    #[test]
    fn booleans_render_as_booleans() {
        let kind = descriptor(
            "  - {name: TLS, displayName: TLS, type: boolean, default: \"false\"}\n  - {name: SKIP, displayName: Skip, type: boolean}\n",
            "    tls:\n      insecure: \"{{not:TLS}}\"\n      insecure_skip_verify: \"{{bool:SKIP}}\"\n",
        );
        assert_eq!(
            rendered(&kind, &[("TLS", "false")]),
            "tls:\n  insecure: true\n"
        );
        assert_eq!(
            rendered(&kind, &[("TLS", "true"), ("SKIP", "True")]),
            "tls:\n  insecure: false\n  insecure_skip_verify: true\n"
        );
        assert_eq!(kind.field("SKIP").unwrap().check("1"), Ok(()));
        assert!(kind.field("SKIP").unwrap().check("yes").is_err());
    }

    #[test]
    fn headers_render_as_a_map() {
        let kind = descriptor(
            "  - {name: H, displayName: H, type: headers}\n  - {name: SH, displayName: SH, type: headers, secret: true}\n",
            "    headers:\n      x-fixed: one\n      \"{{headers:H}}\": {}\n      \"{{headers:SH}}\": {}\n",
        );
        // As Odigos writes them: a JSON list of key/value pairs.
        let odigos = r#"[{"key":"x-tenant","value":"acme"},{"key":"x-env","value":"prod"}]"#;
        assert_eq!(
            rendered(&kind, &[("H", odigos)]),
            "headers:\n  x-fixed: one\n  x-tenant: acme\n  x-env: prod\n"
        );
        assert_eq!(
            rendered(
                &kind,
                &[("H", "{x-a: b}"), ("SH", r#"{"authorization": "k"}"#)]
            ),
            "headers:\n  x-fixed: one\n  x-a: b\n  authorization: ${file:/s}\n"
        );
        assert_eq!(rendered(&kind, &[]), "headers:\n  x-fixed: one\n");
        assert!(kind.field("H").unwrap().check("key=value").is_err());
        let alone = descriptor(
            "  - {name: H, displayName: H, type: headers}\n",
            "    headers: \"{{headers:H}}\"\n",
        );
        assert_eq!(rendered(&alone, &[("H", "[]")]), "headers: {}\n");
        assert_eq!(rendered(&alone, &[]), "{}\n");
    }

    #[test]
    fn conditional_entries_join_when_their_field_is_set() {
        let kind = descriptor(
            "  - {name: TLS, displayName: TLS, type: boolean, default: \"false\"}\n  - {name: CA, displayName: CA, type: pem}\n  - {name: USER, displayName: U, type: string}\n",
            "    tls:\n      insecure: \"{{not:TLS}}\"\n      \"{{if:TLS}}\":\n        ca_pem: \"{{CA}}\"\n    headers:\n      a: b\n      \"{{if:USER}}\":\n        a: \"{{USER}}\"\n",
        );
        assert_eq!(
            rendered(&kind, &[("TLS", "false"), ("CA", "PEM")]),
            "tls:\n  insecure: true\nheaders:\n  a: b\n"
        );
        assert_eq!(
            rendered(&kind, &[("TLS", "true"), ("CA", "PEM"), ("USER", "u")]),
            "tls:\n  insecure: false\n  ca_pem: PEM\nheaders:\n  a: u\n"
        );
    }

    #[test]
    fn pem_text_is_kept_whole() {
        let kind = descriptor(
            "  - {name: CA, displayName: CA, type: pem}\n",
            "    tls:\n      ca_pem: \"{{CA}}\"\n",
        );
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let out = kind.render(
            &BTreeMap::from([("CA".to_string(), pem.to_string())]),
            &mut |_| unreachable!(),
        );
        assert_eq!(out["tls"]["ca_pem"].as_str(), Some(pem));
        assert_eq!(kind.field("CA").unwrap().check(pem), Ok(()));
        assert!(kind.field("CA").unwrap().check("MIIB").is_err());
    }

    #[test]
    fn grpc_addresses_read_as_odigos_reads_them() {
        let values = |v: &str| BTreeMap::from([("U".to_string(), v.to_string())]);
        let grpc = |v: &str| fill("{{grpc:U}}", &values(v)).unwrap();
        assert_eq!(grpc("collector.example:4317"), "collector.example:4317");
        assert_eq!(grpc("collector.example"), "collector.example:4317");
        assert_eq!(grpc("http://c:5317"), "c:5317");
        assert_eq!(grpc("grpc://c"), "c:4317");
        assert_eq!(grpc("grpcs://c"), "https://c:4317");
        assert_eq!(grpc("https://c:443"), "https://c:443");
        assert_eq!(grpc("[::1]"), "[::1]:4317");
        assert_eq!(fill("{{grpc:U:8200}}", &values("apm")).unwrap(), "apm:8200");
        let address = |v: &str| fill("{{address:U:5341}}", &values(v)).unwrap();
        assert_eq!(address("http://seq"), "http://seq:5341");
        assert_eq!(
            address("https://seq:443/ingest/otlp"),
            "https://seq:443/ingest/otlp"
        );
        assert_eq!(address("apm"), "apm:5341");
        let seq = fill("{{address:U:5341:/ingest/otlp}}", &values("http://seq")).unwrap();
        assert_eq!(seq, "http://seq:5341/ingest/otlp");
        let loki = fill("{{http:U:3100:/otlp}}", &values("loki.monitoring")).unwrap();
        assert_eq!(loki, "http://loki.monitoring:3100/otlp");
        let base = |v: &str| fill("{{base:U}}/api/v1/otlp", &values(v)).unwrap();
        assert_eq!(
            base("prom:9090/api/v1/write"),
            "http://prom:9090/api/v1/otlp"
        );
        assert_eq!(base("https://p.example/"), "https://p.example/api/v1/otlp");
        assert_eq!(
            fill("{{hostport:U:4317}}", &values("https://t.monitoring/x")).unwrap(),
            "t.monitoring:4317"
        );
    }

    #[test]
    fn unsupported_and_ignored_fields_say_so() {
        let kind = descriptor(
            "  - {name: OAUTH, displayName: O, type: boolean, default: \"false\", unsupported: no OAuth2 client}\n  - {name: L, displayName: L, type: list, ignored: labels come from the backend}\n",
            "    endpoint: x:1\n",
        );
        let oauth = kind.field("OAUTH").unwrap();
        assert_eq!(oauth.check("false"), Ok(()));
        assert_eq!(
            oauth.check("true"),
            Err("\"true\" is not supported yet: no OAuth2 client".into())
        );
        let values = BTreeMap::from([("L".to_string(), "[\"a\"]".to_string())]);
        assert_eq!(
            kind.ignored(&values).collect::<Vec<_>>(),
            [("L", "labels come from the backend")]
        );
    }

    #[test]
    fn typed_placeholders_need_fields_of_their_type() {
        let errors = Catalog::parse([(
            "a.yaml",
            "type: a\ndisplayName: A\ncategory: managed\nsignals: [TRACES]\nfields:\n  - {name: S, displayName: S, type: string}\nexporter: {type: otlp, config: {tls: {insecure: \"{{not:S}}\"}}}\n",
        )])
        .unwrap_err();
        assert_eq!(errors, ["a.yaml: {{not:S}} needs a field of type Boolean"]);
    }

    #[test]
    fn bad_descriptors_are_reported_with_file_and_line() {
        let errors = Catalog::parse([
            ("a.yaml", "type: a\ndisplayName: A\ncategory: managed\nsignals: [TRACES]\nexporter: {type: otlp, config: {endpoint: \"{{NOPE}}\"}}\n"),
            ("b.yaml", "type: b\ndisplayName: B\ncategory: managed\nsignals: [SPANS]\nexporter: {type: otlp}\n"),
        ])
        .unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0].contains("a.yaml") && errors[0].contains("NOPE"),
            "{errors:?}"
        );
        assert!(errors[1].starts_with("b.yaml:4: signals.0"), "{errors:?}");
    }
}
