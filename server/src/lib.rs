//! The control plane: the OpAMP server that manages the fleet of agents (collectors, odiglets,
//! SDKs) and pushes each its configuration.

pub mod api;
pub mod opamp;
