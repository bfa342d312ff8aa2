//! The destinations catalog: one YAML descriptor per destination type (`server/catalog/*.yaml`,
//! embedded in the binary), saying which fields a Destination of that type has and which
//! collector exporter it becomes.
//!
//! A descriptor's `exporter.config` is the exporter's config with `{{FIELD}}` placeholders. A
//! string that names an optional field without a value is dropped with its map entry, so
//! optional settings vanish cleanly. `{{base64:USER:PASSWORD}}` stands for HTTP basic
//! credentials. Only strings are templated.

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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldKind {
    String,
    Url,
    Number,
    Boolean,
    Select,
}

/// The collector exporter a destination becomes.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExporterTemplate {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub config: Value,
}

impl Field {
    /// Why `value` is not acceptable for this field, if it is not.
    pub fn check(&self, value: &str) -> Result<(), String> {
        match self.kind {
            FieldKind::String => Ok(()),
            FieldKind::Url => {
                let rest = value
                    .strip_prefix("http://")
                    .or_else(|| value.strip_prefix("https://"))
                    .unwrap_or(value);
                let host = rest.split(['/', ':']).next().unwrap_or("");
                if host.is_empty() || value.contains(char::is_whitespace) {
                    Err(format!("{value:?} is not a URL or host:port"))
                } else {
                    Ok(())
                }
            }
            FieldKind::Number => value
                .parse::<f64>()
                .map(drop)
                .map_err(|_| format!("{value:?} is not a number")),
            FieldKind::Boolean => match value {
                "true" | "false" => Ok(()),
                _ => Err(format!("{value:?} is not true or false")),
            },
            FieldKind::Select if self.values.iter().any(|v| v == value) => Ok(()),
            FieldKind::Select => Err(format!(
                "{value:?} is not one of {}",
                self.values.join(", ")
            )),
        }
    }
}

impl DestinationType {
    /// The field named `name`.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The exporter config with every placeholder replaced by `values` (field name → text).
    /// A string that takes in a secret field is passed through `seal`, whose answer (a file
    /// reference) is written instead, so no secret reaches the config.
    pub fn render(
        &self,
        values: &BTreeMap<String, String>,
        seal: &mut dyn FnMut(String) -> String,
    ) -> Value {
        let secret = |name: &str| self.field(name).is_some_and(|f| f.secret);
        render(&self.exporter.config, values, &secret, seal).unwrap_or(Value::Null)
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
            let filled = fill(text, values)?;
            let sealed = placeholder_fields(text).iter().any(|f| secret(f));
            Some(Value::String(if sealed { seal(filled) } else { filled }))
        }
        Value::Mapping(map) => Some(Value::Mapping(
            map.iter()
                .filter_map(|(k, v)| Some((k.clone(), render(v, values, secret, seal)?)))
                .collect(),
        )),
        Value::Sequence(items) => Some(Value::Sequence(
            items
                .iter()
                .filter_map(|v| render(v, values, secret, seal))
                .collect(),
        )),
        other => Some(other.clone()),
    }
}

/// The placeholders of `text`: `{{FIELD}}`, or `{{base64:A:B}}` for the base64 of the values
/// of A and B joined by `:` (HTTP basic credentials).
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
        .flat_map(|p| match p.strip_prefix("base64:") {
            Some(args) => args.split(':').collect(),
            None => vec![p],
        })
        .collect()
}

fn fill(text: &str, values: &BTreeMap<String, String>) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let end = rest[start..].find("}}")? + start;
        out.push_str(&rest[..start]);
        let placeholder = rest[start + 2..end].trim();
        match placeholder.strip_prefix("base64:") {
            Some(args) => {
                let joined: Option<Vec<&str>> = args
                    .split(':')
                    .map(|f| values.get(f).map(String::as_str))
                    .collect();
                out.push_str(&BASE64_STANDARD.encode(joined?.join(":")));
            }
            None => out.push_str(values.get(placeholder)?),
        }
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    Some(out)
}

/// The fields named by placeholders anywhere in `value`.
fn placeholders(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::String(text) => into.extend(placeholder_fields(text).into_iter().map(String::from)),
        Value::Mapping(map) => map.values().for_each(|v| placeholders(v, into)),
        Value::Sequence(items) => items.iter().for_each(|v| placeholders(v, into)),
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
