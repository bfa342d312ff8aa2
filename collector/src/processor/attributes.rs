//! `attributes` and `resource`: insert, update, upsert, delete, hash and rename attributes of
//! items (spans, log records, metric points) or of resources.

use std::sync::Arc;

use async_trait::async_trait;
use odigos_proto::otlp::common::v1::{AnyValue, KeyValue, any_value};
use regex::Regex;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::Batch;
use crate::config::ComponentConfig;
use crate::consumer::{ConsumeError, Consumer, Next};
use crate::processor::Live;
use crate::yaml::Value;

/// `attributes`: actions on the attributes of every span, log record and metric data point.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributesConfig {
    pub actions: Vec<ActionConfig>,
}

/// `resource`: actions on resource attributes.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    pub attributes: Vec<ActionConfig>,
}

/// One action, applied in the order written.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    /// The attribute acted on.
    pub key: Option<String>,
    /// For `delete` and `hash`: act on every key matching this regular expression. For
    /// `extract`: the regular expression applied to the value of `key`, whose named groups
    /// become attributes (`^/api/(?P<version>v\d+)/`).
    pub pattern: Option<String>,
    pub action: ActionKind,
    /// The value set by `insert`, `update` and `upsert`.
    pub value: Option<Value>,
    /// Take the value from this attribute instead of `value`.
    pub from_attribute: Option<String>,
    /// For `rename`: the new key.
    pub new_key: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    /// Add the attribute where it is missing.
    Insert,
    /// Change the attribute where it exists.
    Update,
    /// Insert or update.
    Upsert,
    Delete,
    /// Replace the value with its SHA-256, in hex.
    Hash,
    /// Move the value from `key` to `new_key`.
    Rename,
    /// Match `pattern` against the value of `key` and set one attribute per named group,
    /// replacing what was there.
    Extract,
}

impl ComponentConfig for AttributesConfig {
    fn validate(&self) -> Vec<(Vec<String>, String)> {
        validate_actions("actions", &self.actions)
    }
}

impl ComponentConfig for ResourceConfig {
    fn validate(&self) -> Vec<(Vec<String>, String)> {
        validate_actions("attributes", &self.attributes)
    }
}

fn validate_actions(field: &str, actions: &[ActionConfig]) -> Vec<(Vec<String>, String)> {
    let mut problems = Vec::new();
    for (i, action) in actions.iter().enumerate() {
        if let Err(message) = Action::compile(action) {
            problems.push((vec![field.to_string(), i.to_string()], message));
        }
    }
    problems
}

/// A validated action, ready to run.
#[derive(Debug)]
enum Action {
    Set {
        key: String,
        source: Source,
        insert: bool,
        update: bool,
    },
    Delete(Selector),
    Hash(Selector),
    Rename {
        from: String,
        to: String,
    },
    Extract {
        key: String,
        pattern: Regex,
    },
}

#[derive(Debug)]
enum Source {
    Value(AnyValue),
    Attribute(String),
}

#[derive(Debug)]
enum Selector {
    Key(String),
    Pattern(Regex),
}

impl Selector {
    fn matches(&self, key: &str) -> bool {
        match self {
            Selector::Key(k) => k == key,
            Selector::Pattern(re) => re.is_match(key),
        }
    }
}

impl Action {
    fn compile(config: &ActionConfig) -> Result<Action, String> {
        let kind = format!("{:?}", config.action).to_lowercase();
        let key = || {
            config
                .key
                .clone()
                .ok_or_else(|| format!("{kind} needs a key"))
        };
        let selector = || match (&config.key, &config.pattern) {
            (Some(key), None) => Ok(Selector::Key(key.clone())),
            (None, Some(pattern)) => Regex::new(pattern)
                .map(Selector::Pattern)
                .map_err(|e| format!("invalid pattern {pattern:?}: {e}")),
            _ => Err(format!("{kind} needs exactly one of key or pattern")),
        };
        let unused = |field: &str, present: bool| {
            if present {
                Err(format!("{field} has no meaning for {kind}"))
            } else {
                Ok(())
            }
        };
        Ok(match config.action {
            ActionKind::Insert | ActionKind::Update | ActionKind::Upsert => {
                unused("pattern", config.pattern.is_some())?;
                unused("new_key", config.new_key.is_some())?;
                let source = match (&config.value, &config.from_attribute) {
                    (Some(value), None) => Source::Value(any_value(value)?),
                    (None, Some(from)) => Source::Attribute(from.clone()),
                    _ => {
                        return Err(format!(
                            "{kind} needs exactly one of value or from_attribute"
                        ));
                    }
                };
                Action::Set {
                    key: key()?,
                    source,
                    insert: config.action != ActionKind::Update,
                    update: config.action != ActionKind::Insert,
                }
            }
            ActionKind::Delete | ActionKind::Hash => {
                unused("value", config.value.is_some())?;
                unused("from_attribute", config.from_attribute.is_some())?;
                unused("new_key", config.new_key.is_some())?;
                if config.action == ActionKind::Delete {
                    Action::Delete(selector()?)
                } else {
                    Action::Hash(selector()?)
                }
            }
            ActionKind::Extract => {
                unused("value", config.value.is_some())?;
                unused("from_attribute", config.from_attribute.is_some())?;
                unused("new_key", config.new_key.is_some())?;
                let pattern = config.pattern.as_deref().ok_or("extract needs a pattern")?;
                let pattern =
                    Regex::new(pattern).map_err(|e| format!("invalid pattern {pattern:?}: {e}"))?;
                if pattern.capture_names().flatten().next().is_none() {
                    return Err(format!(
                        "pattern {:?} has no named group ((?P<name>...)) to extract",
                        pattern.as_str()
                    ));
                }
                Action::Extract {
                    key: key()?,
                    pattern,
                }
            }
            ActionKind::Rename => {
                unused("value", config.value.is_some())?;
                unused("pattern", config.pattern.is_some())?;
                let to = config.new_key.clone().ok_or("rename needs new_key")?;
                Action::Rename { from: key()?, to }
            }
        })
    }

    fn apply(&self, attributes: &mut Vec<KeyValue>) {
        let position =
            |attributes: &[KeyValue], key: &str| attributes.iter().position(|kv| kv.key == key);
        match self {
            Action::Set {
                key,
                source,
                insert,
                update,
            } => {
                let value = match source {
                    Source::Value(value) => value.clone(),
                    Source::Attribute(from) => match position(attributes, from) {
                        Some(i) => attributes[i].value.clone().unwrap_or_default(),
                        None => return,
                    },
                };
                match position(attributes, key) {
                    Some(i) if *update => attributes[i].value = Some(value),
                    None if *insert => attributes.push(KeyValue {
                        key: key.clone(),
                        value: Some(value),
                        ..Default::default()
                    }),
                    _ => {}
                }
            }
            Action::Delete(selector) => attributes.retain(|kv| !selector.matches(&kv.key)),
            Action::Hash(selector) => {
                for kv in attributes.iter_mut().filter(|kv| selector.matches(&kv.key)) {
                    let text = value_text(kv.value.as_ref());
                    let digest = Sha256::digest(text.as_bytes());
                    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                    kv.value = Some(string_value(hex));
                }
            }
            Action::Extract { key, pattern } => {
                let Some(any_value::Value::StringValue(text)) = position(attributes, key)
                    .and_then(|i| attributes[i].value.as_ref())
                    .and_then(|v| v.value.as_ref())
                else {
                    return;
                };
                let Some(found) = pattern.captures(text) else {
                    return;
                };
                let extracted: Vec<(String, String)> = pattern
                    .capture_names()
                    .flatten()
                    .filter_map(|name| Some((name.to_string(), found.name(name)?.as_str().into())))
                    .collect();
                for (name, value) in extracted {
                    match position(attributes, &name) {
                        Some(i) => attributes[i].value = Some(string_value(value)),
                        None => attributes.push(KeyValue {
                            key: name,
                            value: Some(string_value(value)),
                            ..Default::default()
                        }),
                    }
                }
            }
            Action::Rename { from, to } => {
                if let Some(i) = position(attributes, from) {
                    let moved = attributes.remove(i);
                    attributes.retain(|kv| kv.key != *to);
                    attributes.push(KeyValue {
                        key: to.clone(),
                        ..moved
                    });
                }
            }
        }
    }
}

/// The text form of an attribute value, as matched by filters and hashed by `hash`.
pub fn value_text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => b.iter().map(|b| format!("{b:02x}")).collect(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

pub fn string_value(s: impl Into<String>) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s.into())),
    }
}

fn any_value(value: &Value) -> Result<AnyValue, String> {
    let value = match value {
        Value::String(s) => any_value::Value::StringValue(s.clone()),
        Value::Bool(b) => any_value::Value::BoolValue(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => any_value::Value::IntValue(i),
            None => any_value::Value::DoubleValue(n.as_f64().unwrap_or_default()),
        },
        _ => return Err("value must be a string, number or boolean".into()),
    };
    Ok(AnyValue { value: Some(value) })
}

/// The compiled actions, shared by every batch.
#[derive(Debug)]
pub struct Actions(Vec<Action>);

impl Actions {
    /// Compiles validated action configs.
    pub fn new(configs: &[ActionConfig]) -> Actions {
        Actions(
            configs
                .iter()
                .map(|c| Action::compile(c).expect("validated"))
                .collect(),
        )
    }

    pub fn apply(&self, attributes: &mut Vec<KeyValue>) {
        self.0.iter().for_each(|action| action.apply(attributes));
    }
}

struct AttributesProcessor {
    actions: Live<Actions>,
    on_resources: bool,
    next: Next,
}

#[async_trait]
impl Consumer for AttributesProcessor {
    async fn consume(&self, mut batch: Batch) -> Result<(), ConsumeError> {
        let decoded = batch.decoded_mut()?;
        let actions = self.actions.load();
        if self.on_resources {
            decoded.for_each_resource_attributes(|attributes| actions.apply(attributes));
        } else {
            decoded.for_each_item_attributes(|attributes| actions.apply(attributes));
        }
        self.next.consume(batch).await
    }
}

/// Builds the processor for item attributes or, with `on_resources`, resource attributes.
pub(super) fn build(actions: Live<Actions>, on_resources: bool, next: Next) -> Next {
    Arc::new(AttributesProcessor {
        actions,
        on_resources,
        next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actions(yaml: &str) -> Actions {
        let config: AttributesConfig =
            crate::yaml::from_value(crate::yaml::parse(yaml).unwrap()).unwrap();
        assert!(config.validate().is_empty(), "{:?}", config.validate());
        Actions::new(&config.actions)
    }

    fn attrs(pairs: &[(&str, &str)]) -> Vec<KeyValue> {
        pairs
            .iter()
            .map(|(k, v)| KeyValue {
                key: k.to_string(),
                value: Some(string_value(*v)),
                ..Default::default()
            })
            .collect()
    }

    fn pairs(attributes: &[KeyValue]) -> Vec<(String, String)> {
        attributes
            .iter()
            .map(|kv| (kv.key.clone(), value_text(kv.value.as_ref())))
            .collect()
    }

    #[test]
    fn applies_actions_in_order() {
        let actions = actions(
            "actions:
  - {key: env, action: insert, value: prod}
  - {key: host, action: insert, value: ignored}
  - {key: host, action: update, value: changed}
  - {key: missing, action: update, value: x}
  - {key: copy, action: upsert, from_attribute: user}
  - {key: user, action: hash}
  - {pattern: ^secret\\., action: delete}
  - {key: old, action: rename, new_key: new}
  - {key: n, action: insert, value: 42}
",
        );
        let mut attributes = attrs(&[
            ("host", "a"),
            ("user", "bob"),
            ("secret.x", "1"),
            ("secret.y", "2"),
            ("old", "v"),
        ]);
        actions.apply(&mut attributes);
        let bob = "81b637d8fcd2c6da6359e6963113a1170de795e4b725b84d1e0b4cfd9ec58ce9";
        assert_eq!(
            pairs(&attributes),
            [
                ("host", "changed"),
                ("user", bob),
                ("env", "prod"),
                ("copy", "bob"),
                ("new", "v"),
                ("n", "42")
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert!(matches!(
            attributes[5].value.as_ref().unwrap().value,
            Some(any_value::Value::IntValue(42))
        ));
    }

    #[test]
    fn extract_sets_named_groups() {
        let actions = actions(
            "actions:
  - {key: http.url, action: extract, pattern: '^https?://[^/]+/api/(?P<api.version>v\\d+)/(?P<api.resource>\\w+)'}
",
        );
        let mut attributes = attrs(&[
            ("http.url", "https://shop.example/api/v2/orders/17"),
            ("api.version", "old"),
        ]);
        actions.apply(&mut attributes);
        assert_eq!(
            pairs(&attributes),
            [
                ("http.url", "https://shop.example/api/v2/orders/17"),
                ("api.version", "v2"),
                ("api.resource", "orders")
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        // No match, or no such attribute: nothing changes.
        let mut other = attrs(&[("http.url", "/health")]);
        actions.apply(&mut other);
        assert_eq!(other.len(), 1);
        let config: AttributesConfig = crate::yaml::from_value(
            crate::yaml::parse("actions:\n  - {key: a, action: extract, pattern: '(x)'}\n  - {key: a, action: extract}\n")
                .unwrap(),
        )
        .unwrap();
        let messages: Vec<String> = config.validate().into_iter().map(|(_, m)| m).collect();
        assert!(messages[0].contains("has no named group"), "{messages:?}");
        assert!(
            messages[1].contains("extract needs a pattern"),
            "{messages:?}"
        );
    }

    #[test]
    fn invalid_actions_are_explained() {
        let config: AttributesConfig = crate::yaml::from_value(
            crate::yaml::parse(
                "actions:
  - {key: a, action: insert}
  - {pattern: '(', action: delete}
  - {key: a, action: rename}
  - {key: a, action: delete, value: x}
",
            )
            .unwrap(),
        )
        .unwrap();
        let messages: Vec<String> = config.validate().into_iter().map(|(_, m)| m).collect();
        assert_eq!(messages.len(), 4, "{messages:?}");
        assert!(messages[0].contains("insert needs exactly one of value or from_attribute"));
        assert!(messages[1].contains("invalid pattern"));
        assert!(messages[2].contains("rename needs new_key"));
        assert!(messages[3].contains("value has no meaning for delete"));
    }
}
