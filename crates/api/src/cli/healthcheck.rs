//! `posts-api healthcheck`: probes `/healthz` of the local instance, for container health
//! checks in images without curl.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::config::ServerSettings;

/// Why the probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// Nothing answered, or the connection broke.
    #[error("cannot reach {address}: {source}")]
    Unreachable {
        /// The probed address.
        address: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Something answered, but not 200.
    #[error("/healthz answered `{0}`")]
    Unhealthy(String),
}

/// GETs `/healthz` on the configured port (on loopback when listening on all interfaces)
/// within `timeout`.
pub fn probe(server: &ServerSettings, timeout: Duration) -> Result<(), ProbeError> {
    let host = match server.host.as_str() {
        "0.0.0.0" | "::" | "[::]" => "127.0.0.1",
        host => host,
    };
    let address = format!("{host}:{}", server.port);
    let unreachable = |source| ProbeError::Unreachable {
        address: address.clone(),
        source,
    };
    let socket: SocketAddr = address
        .to_socket_addrs()
        .map_err(unreachable)?
        .next()
        .ok_or_else(|| unreachable(std::io::Error::other("no address")))?;
    let mut stream = TcpStream::connect_timeout(&socket, timeout).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(unreachable)?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(unreachable)?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(unreachable)?;
    let mut head = [0u8; 64];
    let read = stream.read(&mut head).map_err(unreachable)?;
    let status_line = String::from_utf8_lossy(&head[..read]);
    let status_line = status_line.lines().next().unwrap_or_default().to_owned();
    if status_line.starts_with("HTTP/1.1 200") || status_line.starts_with("HTTP/1.0 200") {
        Ok(())
    } else {
        Err(ProbeError::Unhealthy(status_line))
    }
}
