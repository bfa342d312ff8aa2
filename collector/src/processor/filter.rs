//! `filter`: keeps or drops spans, log records and metrics by name, attribute or resource
//! attribute (the collector's `include` / `exclude` match properties).

use std::sync::Arc;

use async_trait::async_trait;
use odigos_proto::otlp::common::v1::KeyValue;
use regex::Regex;
use serde::Deserialize;

use super::attributes::value_text;
use crate::batch::{Batch, Decoded};
use crate::config::{ComponentConfig, ComponentId};
use crate::consumer::{ConsumeError, Consumer, Next};
use crate::processor::Live;
use crate::telemetry::Counter;
use crate::topology::Context;

#[derive(Clone, Debug, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Which spans to keep (`include`) and drop (`exclude`).
    #[serde(default)]
    pub spans: Rules,
    /// Which log records to keep and drop.
    #[serde(default)]
    pub logs: Rules,
    /// Which metrics to keep and drop.
    #[serde(default)]
    pub metrics: Rules,
    /// Accepted for compatibility; matching never fails at run time.
    #[serde(default)]
    pub error_mode: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// When set, only items matching it are kept.
    pub include: Option<Match>,
    /// Items matching it are dropped.
    pub exclude: Option<Match>,
}

/// Properties an item must all have to match. Within a list, any entry may match.
#[derive(Clone, Debug, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// `strict` (equal text) or `regexp`.
    pub match_type: MatchType,
    /// Resource `service.name` values.
    #[serde(default)]
    pub services: Vec<String>,
    #[serde(default)]
    pub span_names: Vec<String>,
    #[serde(default)]
    pub metric_names: Vec<String>,
    #[serde(default)]
    pub severity_texts: Vec<String>,
    /// Span, log record or data point attributes; a `key` without `value` matches presence.
    #[serde(default, alias = "record_attributes")]
    pub attributes: Vec<AttributeMatch>,
    /// Resource attributes.
    #[serde(default, alias = "resource_attributes")]
    pub resources: Vec<AttributeMatch>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchType {
    #[default]
    Strict,
    Regexp,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeMatch {
    pub key: String,
    pub value: Option<crate::yaml::Value>,
}

impl ComponentConfig for FilterConfig {
    fn validate(&self) -> Vec<(Vec<String>, String)> {
        let mut problems = Vec::new();
        for (section, rules) in [
            ("spans", &self.spans),
            ("logs", &self.logs),
            ("metrics", &self.metrics),
        ] {
            for (side, m) in [("include", &rules.include), ("exclude", &rules.exclude)] {
                if let Some(m) = m
                    && let Err(message) = Matcher::compile(m)
                {
                    problems.push((vec![section.into(), side.into()], message));
                }
            }
        }
        if let Some(mode) = &self.error_mode
            && !["ignore", "silent", "propagate"].contains(&mode.as_str())
        {
            problems.push((
                vec!["error_mode".into()],
                format!("unknown error_mode {mode:?}"),
            ));
        }
        problems
    }
}

/// A text pattern: equal text or a regular expression anchored by the user.
#[derive(Debug)]
enum Pattern {
    Exact(String),
    Regex(Regex),
}

impl Pattern {
    fn is_match(&self, text: &str) -> bool {
        match self {
            Pattern::Exact(s) => s == text,
            Pattern::Regex(re) => re.is_match(text),
        }
    }
}

#[derive(Debug)]
struct Matcher {
    services: Vec<Pattern>,
    names: Vec<Pattern>,
    severity_texts: Vec<Pattern>,
    attributes: Vec<(String, Option<Pattern>)>,
    resources: Vec<(String, Option<Pattern>)>,
}

impl Matcher {
    fn compile(m: &Match) -> Result<Matcher, String> {
        let pattern = |text: &str| match m.match_type {
            MatchType::Strict => Ok(Pattern::Exact(text.to_string())),
            MatchType::Regexp => Regex::new(text)
                .map(Pattern::Regex)
                .map_err(|e| format!("invalid regexp {text:?}: {e}")),
        };
        let patterns = |texts: &[String]| {
            texts
                .iter()
                .map(|t| pattern(t))
                .collect::<Result<Vec<_>, _>>()
        };
        let attributes = |list: &[AttributeMatch]| {
            list.iter()
                .map(|a| {
                    let value = match &a.value {
                        None => None,
                        Some(crate::yaml::Value::String(s)) => Some(pattern(s)?),
                        Some(other) => Some(Pattern::Exact(
                            serde_yaml::to_string(other)
                                .unwrap_or_default()
                                .trim()
                                .to_string(),
                        )),
                    };
                    Ok((a.key.clone(), value))
                })
                .collect::<Result<Vec<_>, String>>()
        };
        let matcher = Matcher {
            services: patterns(&m.services)?,
            names: patterns(&[m.span_names.clone(), m.metric_names.clone()].concat())?,
            severity_texts: patterns(&m.severity_texts)?,
            attributes: attributes(&m.attributes)?,
            resources: attributes(&m.resources)?,
        };
        let empty = matcher.services.is_empty()
            && matcher.names.is_empty()
            && matcher.severity_texts.is_empty()
            && matcher.attributes.is_empty()
            && matcher.resources.is_empty();
        if empty {
            return Err(
                "a match needs at least one property (span_names, attributes, resources, ...)"
                    .into(),
            );
        }
        Ok(matcher)
    }

    fn matches(
        &self,
        resource: &[KeyValue],
        name: Option<&str>,
        severity: Option<&str>,
        attributes: &[KeyValue],
    ) -> bool {
        let any = |patterns: &[Pattern], text: Option<&str>| {
            patterns.is_empty() || text.is_some_and(|t| patterns.iter().any(|p| p.is_match(t)))
        };
        let has = |required: &[(String, Option<Pattern>)], attributes: &[KeyValue]| {
            required.iter().all(|(key, value)| {
                attributes.iter().any(|kv| {
                    kv.key == *key
                        && value
                            .as_ref()
                            .is_none_or(|p| p.is_match(&value_text(kv.value.as_ref())))
                })
            })
        };
        let service = resource
            .iter()
            .find(|kv| kv.key == "service.name")
            .map(|kv| value_text(kv.value.as_ref()));
        any(&self.services, service.as_deref())
            && any(&self.names, name)
            && any(&self.severity_texts, severity)
            && has(&self.attributes, attributes)
            && has(&self.resources, resource)
    }
}

#[derive(Debug, Default)]
struct CompiledRules {
    include: Option<Matcher>,
    exclude: Option<Matcher>,
}

impl CompiledRules {
    fn new(rules: &Rules) -> CompiledRules {
        let compile =
            |m: &Option<Match>| m.as_ref().map(|m| Matcher::compile(m).expect("validated"));
        CompiledRules {
            include: compile(&rules.include),
            exclude: compile(&rules.exclude),
        }
    }

    fn is_empty(&self) -> bool {
        self.include.is_none() && self.exclude.is_none()
    }

    fn keep(
        &self,
        resource: &[KeyValue],
        name: Option<&str>,
        severity: Option<&str>,
        attributes: &[KeyValue],
    ) -> bool {
        self.include
            .as_ref()
            .is_none_or(|m| m.matches(resource, name, severity, attributes))
            && !self
                .exclude
                .as_ref()
                .is_some_and(|m| m.matches(resource, name, severity, attributes))
    }
}

/// The compiled rules of a filter, per signal.
#[derive(Debug)]
pub struct Rulebook {
    spans: CompiledRules,
    logs: CompiledRules,
    metrics: CompiledRules,
}

impl Rulebook {
    /// Compiles a validated config.
    pub fn new(config: &FilterConfig) -> Rulebook {
        Rulebook {
            spans: CompiledRules::new(&config.spans),
            logs: CompiledRules::new(&config.logs),
            metrics: CompiledRules::new(&config.metrics),
        }
    }
}

struct Filter {
    rules: Live<Rulebook>,
    next: Next,
    dropped: Counter,
}

#[async_trait]
impl Consumer for Filter {
    async fn consume(&self, mut batch: Batch) -> Result<(), ConsumeError> {
        let rulebook = self.rules.load();
        let rules = match batch.signal() {
            odigos_proto::Signal::Traces => &rulebook.spans,
            odigos_proto::Signal::Logs => &rulebook.logs,
            odigos_proto::Signal::Metrics => &rulebook.metrics,
        };
        if rules.is_empty() {
            return self.next.consume(batch).await;
        }
        let before = batch.items();
        let decoded = batch.decoded_mut()?;
        match decoded {
            Decoded::Traces(req) => {
                for rs in &mut req.resource_spans {
                    let resource = rs.resource.as_ref().map_or(&[][..], |r| &r.attributes);
                    for ss in &mut rs.scope_spans {
                        ss.spans
                            .retain(|s| rules.keep(resource, Some(&s.name), None, &s.attributes));
                    }
                }
            }
            Decoded::Logs(req) => {
                for rl in &mut req.resource_logs {
                    let resource = rl.resource.as_ref().map_or(&[][..], |r| &r.attributes);
                    for sl in &mut rl.scope_logs {
                        sl.log_records.retain(|l| {
                            rules.keep(resource, None, Some(&l.severity_text), &l.attributes)
                        });
                    }
                }
            }
            Decoded::Metrics(req) => {
                for rm in &mut req.resource_metrics {
                    let resource = rm.resource.as_ref().map_or(&[][..], |r| &r.attributes);
                    for sm in &mut rm.scope_metrics {
                        sm.metrics
                            .retain(|m| rules.keep(resource, Some(&m.name), None, &m.metadata));
                    }
                }
            }
        }
        decoded.prune_empty();
        self.dropped.add(before - batch.items());
        if batch.is_empty() {
            batch.discard();
            return Ok(());
        }
        self.next.consume(batch).await
    }
}

pub(super) fn build(
    rules: Live<Rulebook>,
    id: &ComponentId,
    next: Next,
    context: &Context,
) -> Next {
    let dropped = context.registry.counter(
        "otelcol_processor_filter_dropped_items",
        "Items dropped by filter rules.",
        &[("processor", id.as_str())],
    );
    Arc::new(Filter {
        rules,
        next,
        dropped,
    })
}
