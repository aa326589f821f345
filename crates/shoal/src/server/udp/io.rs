//! Datagrams in batches: one `recvmmsg` takes every datagram waiting (up to `BATCH`), one
//! `sendmmsg` answers them all. Under load this replaces two system calls per request by two
//! per batch, which is most of what a tracker's UDP path costs.
//!
//! Linux only; elsewhere the same interface falls back to one datagram per call.

use std::io;
use std::net::{SocketAddr, UdpSocket};

/// Datagrams per system call. Past 32 the gain flattens while latency of the batch grows.
pub const BATCH: usize = 32;

/// `BATCH` datagram slots of `slot` bytes each, with their peer addresses.
pub struct MsgBatch {
    slot: usize,
    data: Vec<u8>,
    lens: [usize; BATCH],
    addrs: [Option<SocketAddr>; BATCH],
    count: usize,
}

impl MsgBatch {
    pub fn new(slot: usize) -> Self {
        MsgBatch {
            slot,
            data: vec![0; slot * BATCH],
            lens: [0; BATCH],
            addrs: [None; BATCH],
            count: 0,
        }
    }

    /// Datagram `i` and where it came from (`None` for an address family we do not speak).
    pub fn get(&self, i: usize) -> (&[u8], Option<SocketAddr>) {
        let start = i * self.slot;
        (&self.data[start..start + self.lens[i]], self.addrs[i])
    }

    /// Queues a datagram for `send`; false when the batch is full or `data` exceeds a slot.
    pub fn push(&mut self, data: &[u8], to: SocketAddr) -> bool {
        if self.count == BATCH || data.len() > self.slot {
            return false;
        }
        let start = self.count * self.slot;
        self.data[start..start + data.len()].copy_from_slice(data);
        self.lens[self.count] = data.len();
        self.addrs[self.count] = Some(to);
        self.count += 1;
        true
    }
}

#[cfg(target_os = "linux")]
mod sys {
    use super::*;
    use std::mem::{size_of, zeroed};
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::AsRawFd;

    fn to_std(a: &libc::sockaddr_storage) -> Option<SocketAddr> {
        match i32::from(a.ss_family) {
            libc::AF_INET => {
                // SAFETY: the family says the storage holds a sockaddr_in.
                let a = unsafe { &*(a as *const _ as *const libc::sockaddr_in) };
                let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
                Some(SocketAddr::V4(SocketAddrV4::new(
                    ip,
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: the family says the storage holds a sockaddr_in6.
                let a = unsafe { &*(a as *const _ as *const libc::sockaddr_in6) };
                let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
                Some(SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    fn to_c(addr: &SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
        match addr {
            SocketAddr::V4(v4) => {
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
                let a = unsafe { &mut *(out as *mut _ as *mut libc::sockaddr_in) };
                a.sin_family = libc::AF_INET as libc::sa_family_t;
                a.sin_port = v4.port().to_be();
                a.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
                size_of::<libc::sockaddr_in>() as libc::socklen_t
            }
            SocketAddr::V6(v6) => {
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
                let a = unsafe { &mut *(out as *mut _ as *mut libc::sockaddr_in6) };
                a.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                a.sin6_port = v6.port().to_be();
                a.sin6_flowinfo = v6.flowinfo();
                a.sin6_addr.s6_addr = v6.ip().octets();
                a.sin6_scope_id = v6.scope_id();
                size_of::<libc::sockaddr_in6>() as libc::socklen_t
            }
        }
    }

    /// The C side of a batch: headers pointing into `b`, rebuilt per call so nothing
    /// self-referential outlives it.
    struct Headers {
        hdrs: [libc::mmsghdr; BATCH],
        iovs: [libc::iovec; BATCH],
        names: [libc::sockaddr_storage; BATCH],
    }

    impl Headers {
        fn new() -> Box<Self> {
            // SAFETY: all-zero is a valid value for these plain C structs.
            Box::new(unsafe { zeroed() })
        }

        fn point(&mut self, b: &mut MsgBatch, n: usize, lens: impl Fn(&MsgBatch, usize) -> usize) {
            for i in 0..n {
                self.iovs[i] = libc::iovec {
                    iov_base: b.data[i * b.slot..].as_mut_ptr().cast(),
                    iov_len: lens(b, i),
                };
                let h = &mut self.hdrs[i].msg_hdr;
                h.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
                h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                h.msg_iov = &mut self.iovs[i];
                h.msg_iovlen = 1;
                h.msg_control = std::ptr::null_mut();
                h.msg_controllen = 0;
                h.msg_flags = 0;
                self.hdrs[i].msg_len = 0;
            }
        }
    }

    pub struct Io {
        headers: Box<Headers>,
    }

    impl Default for Io {
        fn default() -> Self {
            Self::new()
        }
    }

    impl Io {
        pub fn new() -> Self {
            Io {
                headers: Headers::new(),
            }
        }

        /// Waits for at least one datagram (or the socket's read timeout), then takes every
        /// datagram already queued, up to `BATCH`.
        pub fn recv(&mut self, sock: &UdpSocket, b: &mut MsgBatch) -> io::Result<usize> {
            b.count = 0;
            let h = &mut *self.headers;
            h.point(b, BATCH, |b, _| b.slot);
            // SAFETY: every header points into `b.data` (slot-sized, in bounds) and `h.names`,
            // both alive and unaliased for the duration of the call.
            let n = unsafe {
                libc::recvmmsg(
                    sock.as_raw_fd(),
                    h.hdrs.as_mut_ptr(),
                    BATCH as u32,
                    libc::MSG_WAITFORONE,
                    std::ptr::null_mut(),
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = n as usize;
            for i in 0..n {
                b.lens[i] = h.hdrs[i].msg_len as usize;
                b.addrs[i] = to_std(&h.names[i]);
            }
            b.count = n;
            Ok(n)
        }

        /// Sends every queued datagram; one the kernel refuses is skipped, not retried.
        /// Returns how many were sent.
        pub fn send(&mut self, sock: &UdpSocket, b: &mut MsgBatch) -> usize {
            let count = b.count;
            let h = &mut *self.headers;
            h.point(b, count, |b, i| b.lens[i]);
            for i in 0..count {
                let len = to_c(
                    b.addrs[i].as_ref().expect("queued with an address"),
                    &mut h.names[i],
                );
                h.hdrs[i].msg_hdr.msg_namelen = len;
            }
            let (mut at, mut sent) = (0, 0);
            while at < count {
                // SAFETY: as in `recv`; entries from `at` on are initialised above.
                let n = unsafe {
                    libc::sendmmsg(
                        sock.as_raw_fd(),
                        h.hdrs[at..].as_mut_ptr(),
                        (count - at) as u32,
                        0,
                    )
                };
                if n <= 0 {
                    if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    // The datagram at `at` failed (e.g. an unreachable address): skip it.
                    at += 1;
                } else {
                    at += n as usize;
                    sent += n as usize;
                }
            }
            b.count = 0;
            sent
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use super::*;

    pub struct Io;

    impl Io {
        pub fn new() -> Self {
            Io
        }

        pub fn recv(&mut self, sock: &UdpSocket, b: &mut MsgBatch) -> io::Result<usize> {
            b.count = 0;
            let (n, from) = sock.recv_from(&mut b.data[..b.slot])?;
            b.lens[0] = n;
            b.addrs[0] = Some(from);
            b.count = 1;
            Ok(1)
        }

        pub fn send(&mut self, sock: &UdpSocket, b: &mut MsgBatch) -> usize {
            let mut sent = 0;
            for i in 0..b.count {
                let (data, to) = b.get(i);
                sent += usize::from(
                    sock.send_to(data, to.expect("queued with an address"))
                        .is_ok(),
                );
            }
            b.count = 0;
            sent
        }
    }
}

pub use sys::Io;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_batch_round_trips_over_both_families() {
        for local in ["127.0.0.1:0", "[::1]:0"] {
            let server = UdpSocket::bind(local).unwrap();
            server
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let client = UdpSocket::bind(local).unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            for i in 0..40u8 {
                client
                    .send_to(&[i; 7], server.local_addr().unwrap())
                    .unwrap();
            }
            let (mut io, mut inbox, mut outbox) = (Io::new(), MsgBatch::new(16), MsgBatch::new(16));
            let mut got = Vec::new();
            while got.len() < 40 {
                let n = io.recv(&server, &mut inbox).unwrap();
                assert!((1..=BATCH).contains(&n));
                for i in 0..n {
                    let (data, from) = inbox.get(i);
                    assert_eq!(from, Some(client.local_addr().unwrap()));
                    got.push(data[0]);
                    assert!(outbox.push(&[data[0]; 3], from.unwrap()));
                }
                assert_eq!(io.send(&server, &mut outbox), n);
            }
            assert_eq!(got, (0..40).collect::<Vec<u8>>(), "in order, none lost");
            let mut buf = [0u8; 16];
            for i in 0..40u8 {
                let n = client.recv(&mut buf).unwrap();
                assert_eq!(&buf[..n], &[i; 3]);
            }
            assert!(
                !outbox.push(&[0; 17], client.local_addr().unwrap()),
                "larger than a slot"
            );
        }
    }
}
