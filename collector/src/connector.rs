//! Connectors: the exporter of one pipeline that is the receiver of others, so that shared work
//! (Actions, sampling, batching) runs once and its output fans out.
//!
//! - `forward` hands everything to every pipeline that lists it as a receiver.
//! - `routing` hands each resource to the pipelines of the routes whose condition it matches
//!   (otelcol's `routing` connector, with conditions over resource attributes).
//!
//! A connector's targets are the entries of its downstream pipelines; they are swapped in place
//! when those pipelines are rebuilt, as a receiver's routes are.

pub mod routing;

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use odigos_proto::Signal;
use serde::Deserialize;

use crate::Batch;
use crate::config::{ComponentConfig, ParseError, PipelineId, parse_component};
use crate::consumer::{ConsumeError, Consumer, fanout};
use crate::yaml::Value;

pub use crate::consumer::Next;

#[derive(Clone, Debug, PartialEq)]
pub enum ConnectorConfig {
    Forward,
    Routing(routing::RoutingConfig),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ForwardConfig {}

impl ComponentConfig for ForwardConfig {}

impl ConnectorConfig {
    pub const KINDS: &[&str] = &["forward", "routing"];

    pub(crate) fn parse(kind: &str, value: Value) -> Result<Self, ParseError> {
        match kind {
            "forward" => parse_component::<ForwardConfig>(value).map(|_| ConnectorConfig::Forward),
            "routing" => parse_component(value).map(ConnectorConfig::Routing),
            _ => Err(ParseError::UnknownType { known: Self::KINDS }),
        }
    }

    /// Pipelines the config names (a routing table's), to check against `service.pipelines`.
    pub fn named_pipelines(&self) -> Vec<(Vec<String>, &str)> {
        match self {
            ConnectorConfig::Forward => Vec::new(),
            ConnectorConfig::Routing(config) => config.named_pipelines(),
        }
    }

    pub fn build(&self) -> Arc<Connector> {
        let kind = match self {
            ConnectorConfig::Forward => Kind::Forward,
            ConnectorConfig::Routing(config) => Kind::Routing(routing::Router::new(config)),
        };
        Arc::new(Connector {
            kind,
            targets: ArcSwap::from_pointee(Targets::default()),
        })
    }
}

/// A running connector.
pub struct Connector {
    kind: Kind,
    targets: ArcSwap<Targets>,
}

enum Kind {
    Forward,
    Routing(routing::Router),
}

/// Where a connector sends: per signal, every downstream pipeline (for `forward`), and each
/// routing table entry's and the default pipelines (for `routing`).
#[derive(Default)]
pub(crate) struct Targets {
    all: [Option<Next>; 3],
    routes: Vec<[Option<Next>; 3]>,
    default: [Option<Next>; 3],
}

impl Connector {
    /// Points the connector at the entries of the pipelines that list it as a receiver.
    pub(crate) fn retarget(&self, downstream: &BTreeMap<PipelineId, Next>) {
        let by_signal = |ids: &mut dyn Iterator<Item = &str>| -> [Option<Next>; 3] {
            let wanted: Vec<&str> = ids.collect();
            Signal::ALL.map(|signal| {
                let entries: Vec<Next> = downstream
                    .iter()
                    .filter(|(pid, _)| pid.signal == signal && wanted.contains(&pid.id.as_str()))
                    .map(|(_, next)| next.clone())
                    .collect();
                (!entries.is_empty()).then(|| fanout(entries))
            })
        };
        let all = by_signal(&mut downstream.keys().map(|p| p.id.as_str()));
        let (routes, default) = match &self.kind {
            Kind::Forward => (Vec::new(), Default::default()),
            Kind::Routing(router) => (
                router
                    .route_pipelines()
                    .map(|ids| by_signal(&mut ids.iter().map(String::as_str)))
                    .collect(),
                by_signal(&mut router.default_pipelines().iter().map(String::as_str)),
            ),
        };
        self.targets.store(Arc::new(Targets {
            all,
            routes,
            default,
        }));
    }
}

#[async_trait]
impl Consumer for Connector {
    async fn consume(&self, batch: Batch) -> Result<(), ConsumeError> {
        let targets = self.targets.load_full();
        match &self.kind {
            Kind::Forward => match &targets.all[batch.signal() as usize] {
                Some(next) => next.consume(batch).await,
                None => {
                    batch.discard();
                    Ok(())
                }
            },
            Kind::Routing(router) => router.route(batch, &targets).await,
        }
    }
}
