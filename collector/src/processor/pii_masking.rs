//! `odigospiimasking`: masks personal data in span attribute values, as Odigos's PiiMasking
//! Action does. Predefined categories become `***CATEGORY***`; custom format and regex
//! maskings replace only the captured value with `****`. Strings and arrays of strings are
//! masked; other values, resource attributes and span names are left as they are.

use odigos_proto::otlp::common::v1::{AnyValue, KeyValue, any_value};
use odigos_proto::otlp::trace::v1::ScopeSpans;
use regex::{NoExpand, Regex};
use serde::Deserialize;

use super::span_edit::{ResourceMatch, SpanEditor};
use crate::config::ComponentConfig;

/// What to mask, and in the spans of which resources.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PiiMaskingConfig {
    /// Mask only the spans of these `service.name`s; every service when empty.
    #[serde(default)]
    pub services: Vec<String>,
    /// Mask only the spans of resources with these `telemetry.sdk.language`s; any when empty.
    #[serde(default)]
    pub languages: Vec<String>,
    /// Predefined patterns: `CREDIT_CARD` (Visa and MasterCard numbers), `EMAIL`, `JWT`,
    /// `UUID`.
    #[serde(default)]
    pub pii_categories: Vec<PiiCategory>,
    /// Values found by a key in structured text, applied in order.
    #[serde(default)]
    pub custom_format_maskings: Vec<CustomFormatMasking>,
    /// Regular expressions whose first capture group is masked, applied in order.
    #[serde(default)]
    pub custom_regex_maskings: Vec<CustomRegexMasking>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PiiCategory {
    CreditCard,
    Email,
    Jwt,
    Uuid,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomFormatMasking {
    /// The JSON key, SQL column or URL path segment whose value is masked.
    pub lookup_key: String,
    pub data_format: DataFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataFormat {
    /// `{"key": "value"}` or `key: value`.
    Json,
    /// `key = 'value'`.
    Sql,
    /// `/key/value` in a path.
    ResourcePath,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomRegexMasking {
    /// A regular expression with at least one capture group.
    pub regex: String,
}

impl ComponentConfig for PiiMaskingConfig {
    fn validate(&self) -> Vec<(Vec<String>, String)> {
        match Masker::new(self) {
            Ok(_) => Vec::new(),
            Err(problems) => problems,
        }
    }
}

impl PiiCategory {
    fn token(self) -> &'static str {
        match self {
            PiiCategory::CreditCard => "***CREDIT_CARD***",
            PiiCategory::Email => "***EMAIL***",
            PiiCategory::Jwt => "***JWT***",
            PiiCategory::Uuid => "***UUID***",
        }
    }

    fn patterns(self) -> &'static [&'static str] {
        match self {
            // Visa, then MasterCard. Like Odigos, no checksum: any digits of these shapes.
            PiiCategory::CreditCard => &["4[0-9]{12}(?:[0-9]{3})?", "5[1-5][0-9]{14}"],
            PiiCategory::Email => &[r"[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\.[a-zA-Z]{2,}"],
            // A JWT's header and payload are JSON, so both begin with `eyJ`.
            PiiCategory::Jwt => &[r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+"],
            PiiCategory::Uuid => {
                &["[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"]
            }
        }
    }
}

/// The patterns that capture the value of `key` in `format`. The key must start at a
/// boundary, so `myuser_id` does not match `user_id`. JSON and SQL first take a quoted value
/// whole (it may hold spaces), then an unquoted one.
fn format_patterns(key: &str, format: DataFormat) -> Vec<String> {
    let key = regex::escape(key);
    match format {
        DataFormat::Json => vec![
            format!(r#"(?:^|[\s,{{])"?{key}"?\s*:\s*"((?:[^"\\]|\\.)+)"?"#),
            format!(r#"(?:^|[\s,{{])"?{key}"?\s*:\s*"?([^"\s,}}\]]+)"#),
        ],
        DataFormat::Sql => vec![
            format!(r#"(?:^|[\s,(]){key}\s*=\s*'((?:[^'\\]|\\.)+)'?"#),
            format!(r#"(?:^|[\s,(]){key}\s*=\s*'?([^'\s,;)]+)"#),
        ],
        DataFormat::ResourcePath => vec![format!(r#"(?:^|/){key}/([^/\s"?&#]+)"#)],
    }
}

/// The compiled masking rules.
#[derive(Debug)]
pub struct Masker {
    resources: ResourceMatch,
    categories: Vec<(&'static str, Vec<Regex>)>,
    custom: Vec<Regex>,
}

impl Masker {
    pub fn new(config: &PiiMaskingConfig) -> Result<Masker, Vec<(Vec<String>, String)>> {
        let mut problems = Vec::new();
        let categories = config
            .pii_categories
            .iter()
            .map(|c| {
                let patterns = c.patterns().iter().map(|p| Regex::new(p).expect("valid"));
                (c.token(), patterns.collect())
            })
            .collect();
        let mut custom = Vec::new();
        for (i, masking) in config.custom_format_maskings.iter().enumerate() {
            if masking.lookup_key.is_empty() {
                let path = vec![
                    "custom_format_maskings".into(),
                    i.to_string(),
                    "lookup_key".into(),
                ];
                problems.push((path, "must not be empty".into()));
                continue;
            }
            for pattern in format_patterns(&masking.lookup_key, masking.data_format) {
                custom.push(Regex::new(&pattern).expect("escaped key"));
            }
        }
        for (i, masking) in config.custom_regex_maskings.iter().enumerate() {
            let path = vec![
                "custom_regex_maskings".into(),
                i.to_string(),
                "regex".into(),
            ];
            match Regex::new(&masking.regex) {
                Ok(re) if re.captures_len() < 2 => problems.push((
                    path,
                    format!(
                        "{:?} has no capture group: the first group is what is masked",
                        masking.regex
                    ),
                )),
                Ok(re) => custom.push(re),
                Err(e) => problems.push((path, format!("invalid regex {:?}: {e}", masking.regex))),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Masker {
            resources: ResourceMatch {
                services: config.services.clone(),
                languages: config.languages.clone(),
            },
            categories,
            custom,
        })
    }

    /// `text` with everything masked, or `None` when nothing matched.
    pub fn mask(&self, text: &str) -> Option<String> {
        let mut result = std::borrow::Cow::Borrowed(text);
        for (token, patterns) in &self.categories {
            for pattern in patterns {
                if let std::borrow::Cow::Owned(changed) =
                    pattern.replace_all(&result, NoExpand(token))
                {
                    result = std::borrow::Cow::Owned(changed);
                }
            }
        }
        for pattern in &self.custom {
            if let Some(changed) = mask_first_groups(pattern, &result) {
                result = std::borrow::Cow::Owned(changed);
            }
        }
        match result {
            std::borrow::Cow::Owned(changed) => Some(changed),
            std::borrow::Cow::Borrowed(_) => None,
        }
    }

    fn mask_value(&self, value: &mut AnyValue) {
        match &mut value.value {
            Some(any_value::Value::StringValue(text)) => {
                if let Some(masked) = self.mask(text) {
                    *text = masked;
                }
            }
            Some(any_value::Value::ArrayValue(array)) => {
                array.values.iter_mut().for_each(|v| self.mask_value(v));
            }
            _ => {}
        }
    }

    fn mask_attributes(&self, attributes: &mut [KeyValue]) {
        for value in attributes.iter_mut().filter_map(|kv| kv.value.as_mut()) {
            self.mask_value(value);
        }
    }
}

/// `text` with the first capture group of every match of `pattern` replaced by `****`.
fn mask_first_groups(pattern: &Regex, text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for captures in pattern.captures_iter(text) {
        let Some(group) = captures.get(1) else {
            continue;
        };
        out.push_str(&text[last..group.start()]);
        out.push_str("****");
        last = group.end();
    }
    if last == 0 && out.is_empty() {
        return None;
    }
    out.push_str(&text[last..]);
    (out != text).then_some(out)
}

impl SpanEditor for Masker {
    fn edit(&self, resource: &[KeyValue], scope_spans: &mut [ScopeSpans]) {
        if !self.resources.matches(resource) {
            return;
        }
        for span in scope_spans.iter_mut().flat_map(|ss| ss.spans.iter_mut()) {
            self.mask_attributes(&mut span.attributes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::span_edit::test_support::{kv, scope};
    use super::*;

    fn masker(yaml: &str) -> Masker {
        let config: PiiMaskingConfig =
            crate::yaml::from_value(crate::yaml::parse(yaml).unwrap()).unwrap();
        Masker::new(&config).unwrap()
    }

    fn all() -> Masker {
        masker("pii_categories: [CREDIT_CARD, EMAIL, JWT, UUID]")
    }

    #[test]
    fn masks_emails_inside_text() {
        assert_eq!(
            all()
                .mask("mail bob.smith+x@example.co.uk and ann@b.io, ok")
                .as_deref(),
            Some("mail ***EMAIL*** and ***EMAIL***, ok")
        );
        assert_eq!(all().mask("no at sign here @ all"), None);
    }

    #[test]
    fn masks_jwts_and_uuids() {
        let jwt =
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(
            all().mask(&format!("Bearer {jwt}")).as_deref(),
            Some("Bearer ***JWT***")
        );
        assert_eq!(
            all()
                .mask("/orders/123e4567-E89B-12d3-a456-426614174000/items")
                .as_deref(),
            Some("/orders/***UUID***/items")
        );
    }

    #[test]
    fn masks_visa_and_mastercard_numbers_only() {
        let m = masker("pii_categories: [CREDIT_CARD]");
        assert_eq!(
            m.mask("card 4111111111111111 or 5500000000000004")
                .as_deref(),
            Some("card ***CREDIT_CARD*** or ***CREDIT_CARD***")
        );
        // Amex and numbers that start otherwise are not a category Odigos masks.
        assert_eq!(m.mask("378282246310005 and 6011111111111117"), None);
    }

    #[test]
    fn only_chosen_categories_are_masked() {
        let m = masker("pii_categories: [EMAIL]");
        assert_eq!(
            m.mask("a@b.io 4111111111111111").as_deref(),
            Some("***EMAIL*** 4111111111111111")
        );
    }

    #[test]
    fn custom_maskings_replace_the_captured_value() {
        let m = masker(
            r#"
custom_format_maskings:
  - {lookup_key: ssn, data_format: json}
  - {lookup_key: password, data_format: sql}
  - {lookup_key: orders, data_format: resource_path}
custom_regex_maskings:
  - regex: 'api[_-]?key=([^\s&]+)'
"#,
        );
        let cases = [
            (
                r#"{"ssn": "123-45-6789", "name": "alice"}"#,
                r#"{"ssn": "****", "name": "alice"}"#,
            ),
            (
                "WHERE password = 'hunter 2' AND status = 'ok'",
                "WHERE password = '****' AND status = 'ok'",
            ),
            ("/api/v1/orders/abc-123/items", "/api/v1/orders/****/items"),
            (
                "auth api_key=super-secret-value next",
                "auth api_key=**** next",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(m.mask(input).as_deref(), Some(want), "{input}");
        }
        // The key must start at a boundary.
        assert_eq!(m.mask(r#"{"myssn": "1"}"#), None);
    }

    #[test]
    fn bad_regexes_are_explained() {
        let config: PiiMaskingConfig = crate::yaml::from_value(
            crate::yaml::parse("custom_regex_maskings: [{regex: 'no-group'}, {regex: '('}]")
                .unwrap(),
        )
        .unwrap();
        let problems = config.validate();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].1.contains("no capture group"));
        assert!(problems[1].1.contains("invalid regex"));
    }

    #[test]
    fn masks_span_attributes_of_matching_services() {
        let m = masker("services: [shop]\npii_categories: [EMAIL]");
        let mut spans = scope("s", "GET", 2, vec![kv("user", "a@b.io"), kv("n", "x")]);
        m.edit(&[kv("service.name", "other")], &mut spans);
        assert_eq!(spans[0].spans[0].attributes[0], kv("user", "a@b.io"));
        m.edit(&[kv("service.name", "shop")], &mut spans);
        assert_eq!(spans[0].spans[0].attributes[0], kv("user", "***EMAIL***"));
        assert_eq!(spans[0].spans[0].attributes[1], kv("n", "x"));
    }
}
