//! The control plane: the desired state (custom resources in a store), the config compiler
//! that turns it into per-agent configs, the OpAMP server that pushes them to the fleet, and
//! the UI with its GraphQL API, all served by [`http::Server`].

pub mod api;
pub mod catalog;
pub mod compiler;
pub mod graphql;
pub mod http;
pub mod opamp;
pub mod reconciler;
pub mod resource;
pub mod store;
pub mod throughput;
pub mod ui;
pub mod webhook;
