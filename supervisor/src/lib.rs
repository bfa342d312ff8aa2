//! The OpAMP supervisor that runs inside every managed process.
