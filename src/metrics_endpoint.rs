//! The Prometheus endpoint (`[service] metrics = "127.0.0.1:9464"`): serves `/metrics`
//! for everything recorded through the `metrics` facade.

use std::net::SocketAddr;

/// Install the global recorder and its HTTP listener on the current tokio runtime.
/// Only loopback addresses are accepted: the endpoint has no authentication.
pub fn install(addr: SocketAddr) -> Result<(), String> {
    if !addr.ip().is_loopback() {
        return Err(format!("metrics address {addr} is not a loopback address"));
    }
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))
}
