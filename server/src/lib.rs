//! The control plane: the desired state (custom resources in a store), the config compiler
//! that turns it into per-agent configs, and the OpAMP server that pushes them to the fleet.

pub mod api;
pub mod catalog;
pub mod compiler;
pub mod opamp;
pub mod reconciler;
pub mod resource;
pub mod store;
