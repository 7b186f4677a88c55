//! The model of Envoy around the filters: which connections the listener takes (`transport`), the
//! HTTP connection manager and codec (`hcm`), header maps with Envoy's mutation rules, the
//! router's echo upstream, the clusters `proxy_http_call` reaches, and the attributes
//! `proxy_get_property` reads. Each piece is calibrated against real
//! Envoy 1.40 (see the rig's tests); none knows about VMs or how a stream is driven.

use std::net::SocketAddr;

mod clusters;
pub(crate) mod grpc;
mod hcm;
mod header_map;
mod properties;
pub(crate) mod protobuf;
mod transport;
mod upstream;

pub use clusters::{CalloutRequest, CalloutResponse, Cluster};
pub(crate) use clusters::{CalloutResult, Clusters, GrpcRoute};
pub use hcm::ListenerSettings;
pub(crate) use hcm::{
    check_codec, finalize_response_headers, is_grpc_request, local_reply, remote_address,
    request_body, request_headers, router_response_headers, router_upstream_headers,
};
pub(crate) use header_map::{deserialize_pairs, text, HeaderMap};
pub(crate) use properties::{unmodelled_property, Plugin, PropertyContext, StreamFacts};
pub(crate) use transport::check_transport;
pub use transport::DownstreamTransport;
pub(crate) use upstream::echo;

/// `proxy_get_property` with Envoy's attribute names and encodings.
pub(crate) fn get_property(
    path: &[u8],
    cx: &PropertyContext<'_>,
) -> Result<Vec<u8>, crate::Status> {
    properties::get(path, cx)
}

/// The downstream connection of a request.
#[derive(Debug, Clone)]
pub(crate) struct Connection {
    pub id: u64,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub tls: Option<crate::Tls>,
}
