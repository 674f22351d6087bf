//! The hostwatch protocol, version 1, as generated Rust types and gRPC stubs.
//!
//! The `.proto` files in `hostwatch/v1/` are the source of truth and document every
//! message and field; this crate adds nothing but the generated code. The `client` and
//! `server` features keep server code out of the agent.

#![allow(missing_debug_implementations, unreachable_pub, clippy::all)]

pub mod v1 {
    tonic::include_proto!("hostwatch.v1");

    /// The encoded file descriptor set of all v1 files, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/hostwatch_descriptor.bin"));
}
