//! `odigosspanrenamer`: renames spans of chosen instrumentation scopes by regular
//! expressions, for the SpanRenamer Action. Odigos applies that Action inside its language
//! agents; here it runs in the gateway, on the spans of any SDK or agent, with the same
//! settings: the spans of resources of one `telemetry.sdk.language`, of one instrumentation
//! scope, each replacement applied in turn to the name.

use odigos_proto::otlp::common::v1::KeyValue;
use odigos_proto::otlp::trace::v1::ScopeSpans;
use regex::Regex;
use serde::Deserialize;

use super::span_edit::{ResourceMatch, SpanEditor};
use crate::config::ComponentConfig;

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpanRenamerConfig {
    /// Rename only the spans of these `service.name`s; every service when empty.
    #[serde(default)]
    pub services: Vec<String>,
    /// Rename only the spans of resources with these `telemetry.sdk.language`s; any when
    /// empty.
    #[serde(default)]
    pub languages: Vec<String>,
    /// Replacements per instrumentation scope.
    #[serde(default)]
    pub scope_rules: Vec<ScopeRules>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeRules {
    /// The instrumentation scope whose spans are renamed.
    pub scope_name: String,
    /// Tried in order, each whether or not the ones before matched.
    #[serde(default)]
    pub regex_replacements: Vec<RegexReplacement>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegexReplacement {
    /// What part of the name is replaced, every match of it.
    pub regex_pattern: String,
    /// What replaces it; `$1` or `${name}` insert a capture group.
    pub template_text: String,
}

impl ComponentConfig for SpanRenamerConfig {
    fn validate(&self) -> Vec<(Vec<String>, String)> {
        match Renamer::new(self) {
            Ok(_) => Vec::new(),
            Err(problems) => problems,
        }
    }
}

/// The compiled replacements.
#[derive(Debug)]
pub struct Renamer {
    resources: ResourceMatch,
    scopes: Vec<(String, Vec<(Regex, String)>)>,
}

impl Renamer {
    pub fn new(config: &SpanRenamerConfig) -> Result<Renamer, Vec<(Vec<String>, String)>> {
        let mut problems = Vec::new();
        let mut scopes = Vec::new();
        for (s, rules) in config.scope_rules.iter().enumerate() {
            let mut replacements = Vec::new();
            for (i, r) in rules.regex_replacements.iter().enumerate() {
                match Regex::new(&r.regex_pattern) {
                    Ok(re) => replacements.push((re, r.template_text.clone())),
                    Err(e) => problems.push((
                        [
                            "scope_rules",
                            &s.to_string(),
                            "regex_replacements",
                            &i.to_string(),
                            "regex_pattern",
                        ]
                        .map(String::from)
                        .to_vec(),
                        format!("invalid regex {:?}: {e}", r.regex_pattern),
                    )),
                }
            }
            scopes.push((rules.scope_name.clone(), replacements));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Renamer {
            resources: ResourceMatch {
                services: config.services.clone(),
                languages: config.languages.clone(),
            },
            scopes,
        })
    }

    /// `name` after every replacement of the scope's rules.
    pub fn rename(&self, scope: &str, name: &str) -> Option<String> {
        let mut renamed = None;
        for (_, replacements) in self.scopes.iter().filter(|(s, _)| s == scope) {
            for (pattern, template) in replacements {
                let current = renamed.as_deref().unwrap_or(name);
                if let std::borrow::Cow::Owned(new) =
                    pattern.replace_all(current, template.as_str())
                {
                    renamed = Some(new);
                }
            }
        }
        renamed
    }
}

impl SpanEditor for Renamer {
    fn edit(&self, resource: &[KeyValue], scope_spans: &mut [ScopeSpans]) {
        if !self.resources.matches(resource) {
            return;
        }
        for ss in scope_spans {
            let scope = ss.scope.as_ref().map_or("", |s| s.name.as_str());
            for span in &mut ss.spans {
                if let Some(name) = self.rename(scope, &span.name) {
                    span.name = name;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::span_edit::test_support::{kv, scope};
    use super::*;

    fn renamer(yaml: &str) -> Renamer {
        let config: SpanRenamerConfig =
            crate::yaml::from_value(crate::yaml::parse(yaml).unwrap()).unwrap();
        Renamer::new(&config).unwrap()
    }

    #[test]
    fn renames_spans_of_the_scope_and_language_only() {
        let r = renamer(
            r#"
languages: [java]
scope_rules:
  - scope_name: io.opentelemetry.quartz-2.0
    regex_replacements:
      - {regex_pattern: '\d+', template_text: '{n}'}
      - {regex_pattern: '^job-(\w+)\.', template_text: 'job $1 '}
"#,
        );
        let java = [kv("telemetry.sdk.language", "java")];
        let mut spans = scope(
            "io.opentelemetry.quartz-2.0",
            "job-report.run-42-7",
            0,
            vec![],
        );
        r.edit(&java, &mut spans);
        assert_eq!(spans[0].spans[0].name, "job report run-{n}-{n}");
        let mut other_scope = scope("io.opentelemetry.http", "GET 42", 0, vec![]);
        r.edit(&java, &mut other_scope);
        assert_eq!(other_scope[0].spans[0].name, "GET 42");
        let mut python = scope("io.opentelemetry.quartz-2.0", "x 42", 0, vec![]);
        r.edit(&[kv("telemetry.sdk.language", "python")], &mut python);
        assert_eq!(python[0].spans[0].name, "x 42");
    }

    #[test]
    fn bad_patterns_are_explained() {
        let config: SpanRenamerConfig = crate::yaml::from_value(
            crate::yaml::parse("scope_rules: [{scope_name: s, regex_replacements: [{regex_pattern: '(', template_text: x}]}]").unwrap(),
        )
        .unwrap();
        let problems = config.validate();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].1.contains("invalid regex"), "{problems:?}");
    }
}
