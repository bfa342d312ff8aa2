//! `odigosurltemplate`: turns the URL paths of HTTP spans into low-cardinality templates, as
//! Odigos's processor of that name does. For an HTTP span (one with `http.request.method` or
//! `http.method`) whose instrumentation left the route unset, it reads the path (`url.path`,
//! `http.target`, `url.full`, `http.url`), templatizes it and sets `http.route` (server spans)
//! or `url.template` (client spans), plus `odigos.url_templatization.result`; a span named only
//! by its method becomes `{method} {template}`.
//!
//! Templatization tries the custom rules first (`/users/{id}/friends/*`), then the default
//! heuristics: a segment of only digits and punctuation, with 7 digits in a row, a UUID (at
//! its start or end), 16 or more hex digits, or a custom id becomes `{id}`; an ISO 8601 date
//! `{date}`; an email `{email}`. Words and short mixed segments such as `v1` stay.

use std::collections::BTreeSet;

use odigos_proto::otlp::common::v1::KeyValue;
use odigos_proto::otlp::common::v1::any_value;
use odigos_proto::otlp::trace::v1::ScopeSpans;
use odigos_proto::otlp::trace::v1::span::SpanKind;
use regex::Regex;
use serde::Deserialize;
use std::sync::LazyLock;

use super::span_edit::{ResourceMatch, SpanEditor, string_attribute};
use crate::config::ComponentConfig;

/// The rules, for every resource and for groups of resources.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UrlTemplateConfig {
    /// Path rules for every resource. A rule is `/`-separated segments: a static string that
    /// must equal the path's segment, `*` (any one segment, kept as it is) or `{name}` (any one
    /// segment, templated as `{name}`; `{}` means `{id}`). A rule matches paths of as many
    /// segments; the first matching rule wins.
    #[serde(default)]
    pub templatization_rules: Vec<String>,
    /// More id formats for the default heuristics: a segment matching `regexp` becomes
    /// `{template_name}`.
    #[serde(default)]
    pub custom_ids: Vec<CustomId>,
    /// Rules and default-heuristics settings for some resources only.
    #[serde(default)]
    pub groups: Vec<Group>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomId {
    pub regexp: String,
    /// `id` when not set.
    #[serde(default)]
    pub template_name: Option<String>,
}

/// Settings for the resources of some services or languages (each list that is set must
/// match). Rules of every matching group add to the common ones; default settings merge.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// `service.name` values; any when empty.
    #[serde(default)]
    pub services: Vec<String>,
    /// `telemetry.sdk.language` values; any when empty.
    #[serde(default)]
    pub languages: Vec<String>,
    #[serde(default)]
    pub templatization_rules: Vec<String>,
    #[serde(default)]
    pub default: Option<DefaultTemplatization>,
}

/// Settings of the default heuristics.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultTemplatization {
    /// No default heuristics (custom rules still apply). Any matching group that disables
    /// them wins.
    #[serde(default)]
    pub disabled: bool,
    #[serde(default)]
    pub skip_policy: Option<SkipPolicy>,
}

/// Server spans with these response codes keep their path untemplated by the heuristics
/// (scanners probing random paths would otherwise make new routes).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkipPolicy {
    /// Every status outside 2xx.
    #[serde(default)]
    pub skip_for_non_success_codes: bool,
    #[serde(default)]
    pub skip_http_status_codes: Vec<i64>,
}

impl ComponentConfig for UrlTemplateConfig {
    fn validate(&self) -> Vec<(Vec<String>, String)> {
        match Templater::new(self) {
            Ok(_) => Vec::new(),
            Err(problems) => problems,
        }
    }
}

/// One segment of a path rule.
#[derive(Clone, Debug, PartialEq)]
enum RuleSegment {
    Static(String),
    Wildcard,
    Template(String),
}

/// A parsed path rule.
#[derive(Clone, Debug, PartialEq)]
pub struct PathRule(Vec<RuleSegment>);

impl PathRule {
    pub fn parse(rule: &str) -> PathRule {
        let rule = rule.strip_prefix('/').unwrap_or(rule);
        PathRule(
            rule.split('/')
                .map(|segment| {
                    if segment == "*" {
                        RuleSegment::Wildcard
                    } else if let Some(name) =
                        segment.strip_prefix('{').and_then(|s| s.strip_suffix('}'))
                    {
                        let name = name.trim();
                        RuleSegment::Template(if name.is_empty() { "id" } else { name }.into())
                    } else {
                        RuleSegment::Static(segment.into())
                    }
                })
                .collect(),
        )
    }

    /// The template for `segments`, when the rule matches them.
    fn apply(&self, segments: &[&str]) -> Option<String> {
        if self.0.len() != segments.len() {
            return None;
        }
        let mut out = Vec::with_capacity(segments.len());
        for (rule, segment) in self.0.iter().zip(segments) {
            match rule {
                RuleSegment::Static(s) if s == segment => out.push(s.clone()),
                RuleSegment::Static(_) => return None,
                RuleSegment::Wildcard => out.push(segment.to_string()),
                RuleSegment::Template(name) => out.push(format!("{{{name}}}")),
            }
        }
        Some(out.join("/"))
    }
}

static NO_LETTERS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"^[\d_\-!@#$%^&*()=+{}\[\]:;"'<>,.?/\\|`~]+$"#).unwrap());
static UUID: LazyLock<Regex> = LazyLock::new(|| {
    let uuid = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}";
    Regex::new(&format!("(^{uuid})|({uuid}$)")).unwrap()
});
static HEX: LazyLock<Regex> = LazyLock::new(|| Regex::new("^(?:[0-9a-fA-F]{2}){8,}$").unwrap());
static LONG_NUMBER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\d{7,}").unwrap());
static DATE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2})?)?(?:Z|[+-]\d{4})?$").unwrap()
});
static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9.-]+\.[a-zA-Z]{2,}$").unwrap()
});

/// How a span's template came about, in `odigos.url_templatization.result`.
const RESULT_ATTRIBUTE: &str = "odigos.url_templatization.result";

/// The compiled rules.
#[derive(Debug)]
pub struct Templater {
    rules: Vec<PathRule>,
    custom_ids: Vec<(Regex, String)>,
    groups: Vec<(ResourceMatch, Vec<PathRule>, Option<DefaultTemplatization>)>,
}

/// What applies to one resource.
struct Effective<'a> {
    rules: Vec<&'a PathRule>,
    /// `None`: no default heuristics.
    default: Option<SkipPolicy>,
}

impl Templater {
    pub fn new(config: &UrlTemplateConfig) -> Result<Templater, Vec<(Vec<String>, String)>> {
        let mut problems = Vec::new();
        let mut custom_ids = Vec::new();
        for (i, custom) in config.custom_ids.iter().enumerate() {
            match Regex::new(&custom.regexp) {
                Ok(re) => {
                    let name = custom.template_name.clone().filter(|n| !n.is_empty());
                    custom_ids.push((re, name.unwrap_or_else(|| "id".into())));
                }
                Err(e) => problems.push((
                    vec!["custom_ids".into(), i.to_string(), "regexp".into()],
                    format!("invalid custom id regexp {:?}: {e}", custom.regexp),
                )),
            }
        }
        let mut check = |path: Vec<String>, rule: &str| {
            if rule.trim_matches('/').is_empty() {
                problems.push((path, format!("{rule:?} is not a path rule")));
            }
        };
        for (i, rule) in config.templatization_rules.iter().enumerate() {
            check(vec!["templatization_rules".into(), i.to_string()], rule);
        }
        for (g, group) in config.groups.iter().enumerate() {
            for (i, rule) in group.templatization_rules.iter().enumerate() {
                let path = [
                    "groups",
                    &g.to_string(),
                    "templatization_rules",
                    &i.to_string(),
                ];
                check(path.map(String::from).to_vec(), rule);
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let parse = |rules: &[String]| rules.iter().map(|r| PathRule::parse(r)).collect();
        Ok(Templater {
            rules: parse(&config.templatization_rules),
            custom_ids,
            groups: config
                .groups
                .iter()
                .map(|g| {
                    let resources = ResourceMatch {
                        services: g.services.clone(),
                        languages: g.languages.clone(),
                    };
                    (resources, parse(&g.templatization_rules), g.default.clone())
                })
                .collect(),
        })
    }

    fn effective(&self, resource: &[KeyValue]) -> Effective<'_> {
        let mut rules: Vec<&PathRule> = self.rules.iter().collect();
        let mut disabled = false;
        let mut skip = SkipPolicy::default();
        for (resources, group_rules, default) in &self.groups {
            if !resources.matches(resource) {
                continue;
            }
            rules.extend(group_rules);
            if let Some(default) = default {
                disabled |= default.disabled;
                if let Some(policy) = &default.skip_policy {
                    skip.skip_for_non_success_codes |= policy.skip_for_non_success_codes;
                    skip.skip_http_status_codes
                        .extend(&policy.skip_http_status_codes);
                }
            }
        }
        Effective {
            rules,
            default: (!disabled).then_some(skip),
        }
    }

    /// The name a segment is templated as by the default heuristics, if any.
    fn segment_template(&self, segment: &str) -> Option<&str> {
        if let Some((_, name)) = self.custom_ids.iter().find(|(re, _)| re.is_match(segment)) {
            return Some(name);
        }
        if DATE.is_match(segment) {
            return Some("date");
        }
        if EMAIL.is_match(segment) {
            return Some("email");
        }
        let id = NO_LETTERS.is_match(segment)
            || LONG_NUMBER.is_match(segment)
            || UUID.is_match(segment)
            || HEX.is_match(segment)
            || segment.contains('\u{FFFD}');
        id.then_some("id")
    }

    /// The template for `path` and how it came about, or `None` to leave the span alone.
    pub fn template(
        &self,
        path: &str,
        rules: &[&PathRule],
        default: Option<&SkipPolicy>,
        status: Option<i64>,
        server: bool,
    ) -> Option<(String, &'static str)> {
        if path.trim_matches('/').is_empty() {
            return Some(("/".into(), "path_normalization"));
        }
        let (rest, leading) = match path.strip_prefix('/') {
            Some(rest) => (rest, "/"),
            None => (path, ""),
        };
        let segments: Vec<&str> = rest.split('/').collect();
        if let Some(templated) = rules.iter().find_map(|rule| rule.apply(&segments)) {
            return Some((format!("{leading}{templated}"), "custom_rule"));
        }
        let policy = default?;
        if server && let Some(status) = status {
            let failed = !(200..300).contains(&status);
            if (policy.skip_for_non_success_codes && failed)
                || policy.skip_http_status_codes.contains(&status)
            {
                return None;
            }
        }
        let mut templated = false;
        let out: Vec<String> = segments
            .iter()
            .map(|segment| match self.segment_template(segment) {
                Some(name) => {
                    templated = true;
                    format!("{{{name}}}")
                }
                None => segment.to_string(),
            })
            .collect();
        if templated {
            Some((format!("{leading}{}", out.join("/")), "default_heuristic"))
        } else {
            Some((path.to_string(), "static_path"))
        }
    }
}

/// The path of an HTTP span, from the first attribute that has it.
fn url_path(attributes: &[KeyValue]) -> Option<String> {
    if let Some(path) = string_attribute(attributes, "url.path") {
        return Some(path.to_string());
    }
    if let Some(target) = string_attribute(attributes, "http.target") {
        return Some(target.split('?').next().unwrap_or_default().to_string());
    }
    let full = string_attribute(attributes, "url.full")
        .or_else(|| string_attribute(attributes, "http.url"))?;
    // The path of an absolute URL: after the scheme and authority, before `?` and `#`.
    let after_scheme = full.split_once("://").map_or(full, |(_, rest)| rest);
    let path = match after_scheme.find('/') {
        Some(i) if full.contains("://") => &after_scheme[i..],
        None if full.contains("://") => "",
        _ => after_scheme,
    };
    Some(
        path.split(['?', '#'])
            .next()
            .unwrap_or_default()
            .to_string(),
    )
}

fn int_attribute(attributes: &[KeyValue], key: &str) -> Option<i64> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::IntValue(i) => Some(*i),
            _ => None,
        }
    })
}

fn put(attributes: &mut Vec<KeyValue>, key: &str, value: String) {
    attributes.retain(|kv| kv.key != key);
    attributes.push(KeyValue {
        key: key.into(),
        value: Some(super::attributes::string_value(value)),
        ..Default::default()
    });
}

impl SpanEditor for Templater {
    fn edit(&self, resource: &[KeyValue], scope_spans: &mut [ScopeSpans]) {
        let effective = self.effective(resource);
        if effective.rules.is_empty() && effective.default.is_none() {
            return;
        }
        for span in scope_spans.iter_mut().flat_map(|ss| ss.spans.iter_mut()) {
            let attributes = &span.attributes;
            let Some(method) = string_attribute(attributes, "http.request.method")
                .or_else(|| string_attribute(attributes, "http.method"))
                .map(str::to_string)
            else {
                continue;
            };
            let (target, server) = match SpanKind::try_from(span.kind) {
                Ok(SpanKind::Client) => ("url.template", false),
                Ok(SpanKind::Server) => ("http.route", true),
                _ => continue,
            };
            let set_name = |name: &mut String, template: &str| {
                if *name == method && !template.is_empty() {
                    *name = format!("{method} {template}");
                }
            };
            if let Some(kv) = attributes.iter().find(|kv| kv.key == target) {
                // Set by the instrumentation: kept; an empty one names the root.
                if string_attribute(std::slice::from_ref(kv), target) == Some("") {
                    set_name(&mut span.name, "/");
                }
                continue;
            }
            let Some(path) = url_path(attributes) else {
                continue;
            };
            let status = int_attribute(attributes, "http.response.status_code")
                .or_else(|| int_attribute(attributes, "http.status_code"));
            let Some((template, result)) = self.template(
                &path,
                &effective.rules,
                effective.default.as_ref(),
                status,
                server,
            ) else {
                continue;
            };
            set_name(&mut span.name, &template);
            put(&mut span.attributes, target, template);
            put(&mut span.attributes, RESULT_ATTRIBUTE, result.into());
        }
    }
}

/// Sorted, without duplicates: how rules from several Actions are joined.
pub fn joined_rules<'a>(rules: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    rules
        .into_iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::span_edit::test_support::{int, kv, scope};
    use super::*;

    fn templater(yaml: &str) -> Templater {
        let config: UrlTemplateConfig =
            crate::yaml::from_value(crate::yaml::parse(yaml).unwrap()).unwrap();
        Templater::new(&config).unwrap()
    }

    fn default(t: &Templater, path: &str) -> String {
        t.template(path, &[], Some(&SkipPolicy::default()), None, true)
            .unwrap()
            .0
    }

    #[test]
    fn default_heuristics_template_ids_not_words() {
        let t = templater("{}");
        let cases = [
            (
                "/users/123/orders/9f8e7d6c-5b4a-3928-1716-0a0b0c0d0e0f",
                "/users/{id}/orders/{id}",
            ),
            ("/v1/users/42", "/v1/users/{id}"),
            ("/api/v2/items", "/api/v2/items"),
            ("/user/john", "/user/john"),
            ("/user/s111222", "/user/s111222"),
            ("/tickets/INC0012686", "/tickets/{id}"),
            (
                "/process/PROCESS_123e4567-e89b-12d3-a456-426614174000",
                "/process/{id}",
            ),
            ("/trace/6f2a9cdeab34f01e", "/trace/{id}"),
            ("/words/feedface", "/words/feedface"),
            ("/reports/2025-12-04T14:55:04+0000", "/reports/{date}"),
            ("/reports/2025-12-04", "/reports/{date}"),
            ("/people/foo@bar.io/inbox", "/people/{email}/inbox"),
            ("/a/123_456", "/a/{id}"),
            ("relative/7", "relative/{id}"),
            ("/x/\u{FFFD}abc", "/x/{id}"),
        ];
        for (path, want) in cases {
            assert_eq!(default(&t, path), want, "{path}");
        }
        assert_eq!(
            t.template("/", &[], Some(&SkipPolicy::default()), None, true),
            Some(("/".into(), "path_normalization"))
        );
    }

    #[test]
    fn custom_rules_come_first_and_match_whole_paths() {
        let t = templater(
            "templatization_rules: ['/user/{user-name}/friends/{friend-id}', '/v1/*', '/item/{}']\ncustom_ids: [{regexp: '^inc_\\d+$', template_name: incidentId}]",
        );
        let rules: Vec<&PathRule> = t.rules.iter().collect();
        let policy = SkipPolicy::default();
        let run = |path: &str| t.template(path, &rules, Some(&policy), None, true).unwrap();
        assert_eq!(
            run("/user/john/friends/1234"),
            (
                "/user/{user-name}/friends/{friend-id}".into(),
                "custom_rule"
            )
        );
        assert_eq!(run("/v1/admins"), ("/v1/admins".into(), "custom_rule"));
        assert_eq!(run("/v1/a/7"), ("/v1/a/{id}".into(), "default_heuristic"));
        assert_eq!(run("/item/abc"), ("/item/{id}".into(), "custom_rule"));
        assert_eq!(
            run("/incidents/inc_42"),
            ("/incidents/{incidentId}".into(), "default_heuristic")
        );
    }

    #[test]
    fn skip_policy_and_disabled_defaults() {
        let t = templater(
            "groups:\n  - {services: [public], default: {skip_policy: {skip_http_status_codes: [404]}}}\n  - {services: [quiet], templatization_rules: ['/q/{n}'], default: {disabled: true}}",
        );
        let public = [kv("service.name", "public")];
        let quiet = [kv("service.name", "quiet")];
        let e = t.effective(&public);
        assert_eq!(
            t.template("/x/1", &e.rules, e.default.as_ref(), Some(404), true),
            None
        );
        assert!(
            t.template("/x/1", &e.rules, e.default.as_ref(), Some(404), false)
                .is_some()
        );
        assert!(
            t.template("/x/1", &e.rules, e.default.as_ref(), Some(200), true)
                .is_some()
        );
        let e = t.effective(&quiet);
        assert_eq!(
            t.template("/x/1", &e.rules, e.default.as_ref(), None, true),
            None
        );
        assert_eq!(
            t.template("/q/1", &e.rules, e.default.as_ref(), None, true),
            Some(("/q/{n}".into(), "custom_rule"))
        );
    }

    #[test]
    fn sets_route_and_name_of_http_spans() {
        let t = templater("{}");
        let server = SpanKind::Server as i32;
        let client = SpanKind::Client as i32;
        let mut spans = scope(
            "s",
            "GET",
            server,
            vec![
                kv("http.request.method", "GET"),
                kv("url.path", "/users/123"),
                int("http.response.status_code", 200),
            ],
        );
        t.edit(&[], &mut spans);
        let span = &spans[0].spans[0];
        assert_eq!(span.name, "GET /users/{id}");
        assert_eq!(
            string_attribute(&span.attributes, "http.route"),
            Some("/users/{id}")
        );
        assert_eq!(
            string_attribute(&span.attributes, RESULT_ATTRIBUTE),
            Some("default_heuristic")
        );

        let mut spans = scope(
            "s",
            "fetch",
            client,
            vec![
                kv("http.method", "POST"),
                kv("http.url", "https://a.example:8443/orders/77?x=1"),
            ],
        );
        t.edit(&[], &mut spans);
        let span = &spans[0].spans[0];
        assert_eq!(span.name, "fetch");
        assert_eq!(
            string_attribute(&span.attributes, "url.template"),
            Some("/orders/{id}")
        );

        // A route the instrumentation set is kept; spans without a method are not HTTP.
        let mut spans = scope(
            "s",
            "GET",
            server,
            vec![
                kv("http.request.method", "GET"),
                kv("http.route", "/u/:id"),
                kv("url.path", "/u/1"),
            ],
        );
        t.edit(&[], &mut spans);
        assert_eq!(spans[0].spans[0].name, "GET");
        assert_eq!(
            string_attribute(&spans[0].spans[0].attributes, "http.route"),
            Some("/u/:id")
        );
        let mut spans = scope("s", "work", server, vec![kv("url.path", "/u/1")]);
        t.edit(&[], &mut spans);
        assert_eq!(spans[0].spans[0].attributes.len(), 1);
    }
}
