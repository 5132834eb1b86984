//! Generated tonic/prost code for berth's protocols (`proto/berth/v1`).
//! Nothing but generated code lives here; conversions to the domain types
//! are in `berth-manager`.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("berth.v1");

    /// Encoded descriptors for gRPC reflection (`grpcurl` works against a manager).
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("berth_descriptor");
}
