//! The control plane: desired state, config compiler, OpAMP server and API.
