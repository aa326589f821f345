//! Listening sockets, and the file descriptors every listener may hold together.

use std::net::SocketAddr;

use socket2::{Domain, Protocol as SockProtocol, Socket, Type};
use tokio::net::TcpListener;

use super::super::{Error, Result};
use crate::config::Config;

/// Descriptors besides the listeners' connections: the listening sockets, UDP, Redis,
/// the flusher, epoll, logs, certificate files; generous on purpose.
const FD_RESERVE: u64 = 64;

/// Every listener's connection cap together, plus database pools and a reserve, must fit in
/// `RLIMIT_NOFILE`, so a full listener can never take another's descriptors (the soft
/// limit is raised to the hard one if needed; docs/operations.md, "File descriptors").
pub(super) fn check_fd_budget(config: &Config) -> Result<u64> {
    let caps = [
        (
            "http.max_connections",
            config.http.max_connections.get() as u64 * config.http.bind.len() as u64,
        ),
        (
            "ws.max_connections",
            config.ws.max_connections.get() as u64 * config.ws.bind.len() as u64,
        ),
        (
            "api.max_connections",
            config.api.max_connections.get() as u64,
        ),
        (
            "database.max_connections",
            u64::from(config.database.max_connections.get()) + 2,
        ),
    ];
    let needed = caps.iter().map(|(_, n)| n).sum::<u64>() + FD_RESERVE;
    crate::os::ensure_open_files(needed).map_err(|(soft, hard)| {
        let parts: Vec<String> = caps
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        Error::Said(format!(
            "the connection caps need {needed} file descriptors ({} and {FD_RESERVE} reserved) but RLIMIT_NOFILE allows {soft} (hard limit {hard}): raise LimitNOFILE / ulimit -n, or lower the caps",
            parts.join(", ")
        ))
    })?;
    Ok(needed)
}

fn socket_for(addr: SocketAddr, ty: Type, proto: SockProtocol) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv6() {
        // Lets [::]:6969 and 0.0.0.0:6969 be bound side by side, as operators list them.
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

pub(super) fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = socket_for(addr, Type::DGRAM, SockProtocol::UDP)?;
    // The workers block in recvmmsg (with a read timeout) on threads of their own.
    socket.set_nonblocking(false)?;
    // A larger receive buffer absorbs bursts; the kernel caps it at net.core.rmem_max.
    let _ = socket.set_recv_buffer_size(8 << 20);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

pub(super) fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket_for(addr, Type::STREAM, SockProtocol::TCP)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}
