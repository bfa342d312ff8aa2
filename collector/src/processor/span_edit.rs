//! What the processors that change spans in place share: which resources they apply to, and
//! the consumer that hands them each resource's spans.

use std::sync::Arc;

use async_trait::async_trait;
use odigos_proto::otlp::common::v1::{KeyValue, any_value};
use odigos_proto::otlp::trace::v1::ScopeSpans;

use crate::batch::{Batch, Decoded};
use crate::consumer::{ConsumeError, Consumer, Next};
use crate::processor::Live;

/// Which resources a processor applies to (from its `services` and `languages` keys). Each
/// list that is set must hold the resource's value; with neither set, every resource.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResourceMatch {
    /// `service.name` values.
    pub services: Vec<String>,
    /// `telemetry.sdk.language` values (`java`, `python`, `go`, `nodejs`, `dotnet`, ...).
    pub languages: Vec<String>,
}

impl ResourceMatch {
    pub fn matches(&self, resource: &[KeyValue]) -> bool {
        let holds = |wanted: &[String], key: &str| {
            wanted.is_empty()
                || string_attribute(resource, key).is_some_and(|v| wanted.iter().any(|w| w == v))
        };
        holds(&self.services, "service.name") && holds(&self.languages, "telemetry.sdk.language")
    }
}

/// The value of a string attribute.
pub fn string_attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}

/// Changes the spans of one resource at a time.
pub trait SpanEditor: Send + Sync + 'static {
    fn edit(&self, resource: &[KeyValue], scope_spans: &mut [ScopeSpans]);
}

struct SpanProcessor<T> {
    editor: Live<T>,
    next: Next,
}

#[async_trait]
impl<T: SpanEditor> Consumer for SpanProcessor<T> {
    async fn consume(&self, mut batch: Batch) -> Result<(), ConsumeError> {
        if let Decoded::Traces(request) = batch.decoded_mut()? {
            let editor = self.editor.load();
            for rs in &mut request.resource_spans {
                let resource = rs.resource.as_ref().map_or(&[][..], |r| &r.attributes);
                editor.edit(resource, &mut rs.scope_spans);
            }
        }
        self.next.consume(batch).await
    }
}

/// The processor entry for `editor`, in front of `next`.
pub(super) fn build<T: SpanEditor>(editor: Live<T>, next: Next) -> Next {
    Arc::new(SpanProcessor { editor, next })
}

#[cfg(test)]
pub(crate) mod test_support {
    use odigos_proto::otlp::common::v1::{AnyValue, InstrumentationScope};
    use odigos_proto::otlp::trace::v1::Span;

    use super::*;

    pub fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.into())),
            }),
            ..Default::default()
        }
    }

    pub fn int(key: &str, value: i64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(value)),
            }),
            ..Default::default()
        }
    }

    /// One scope of one span.
    pub fn scope(scope: &str, name: &str, kind: i32, attributes: Vec<KeyValue>) -> Vec<ScopeSpans> {
        vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: scope.into(),
                ..Default::default()
            }),
            spans: vec![Span {
                name: name.into(),
                kind,
                attributes,
                ..Default::default()
            }],
            ..Default::default()
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::kv;
    use super::*;

    #[test]
    fn resource_match_needs_every_list_that_is_set() {
        let any = ResourceMatch::default();
        let shop = ResourceMatch {
            services: vec!["shop".into()],
            languages: vec!["python".into()],
        };
        let python_shop = [
            kv("service.name", "shop"),
            kv("telemetry.sdk.language", "python"),
        ];
        let java_shop = [
            kv("service.name", "shop"),
            kv("telemetry.sdk.language", "java"),
        ];
        assert!(any.matches(&[]));
        assert!(shop.matches(&python_shop));
        assert!(!shop.matches(&java_shop));
        assert!(!shop.matches(&[kv("service.name", "shop")]));
    }
}
