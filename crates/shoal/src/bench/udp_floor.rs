//! `shoal bench udp-floor`: a BEP 15 responder that does no tracker work. It answers connect,
//! announce and scrape with correctly sized packets through the same batched socket code as
//! the tracker, so a load test against it shows what the kernel and the load generator allow
//! on this machine: the ceiling any tracker's UDP throughput is measured against.

use crate::cmd::{Error, Result};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::server::udp::io::{Io, MsgBatch};

/// A UDP responder that answers BEP 15 connect, announce and scrape with correctly sized
/// packets and does no tracker work: the throughput floor for scripts/bench-throughput.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value = "127.0.0.1:3000", value_name = "ADDR")]
    pub bind: SocketAddr,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 60, value_name = "S")]
    pub seconds: u64,
    /// Peers in every announce answer (fewer if the request wants fewer).
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub peers: usize,
}

pub fn run(
    Args {
        bind,
        seconds,
        peers,
    }: Args,
) -> Result<()> {
    let socket = UdpSocket::bind(bind).map_err(Error::io(format!("cannot bind {bind}")))?;
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(Error::io("setting a read timeout"))?;
    eprintln!(
        "udp floor listening on {}",
        socket
            .local_addr()
            .map_err(Error::io("the socket's address"))?
    );
    let (mut io, mut inbox, mut outbox) = (Io::new(), MsgBatch::new(1501), MsgBatch::new(1500));
    let mut out = [0u8; 1500];
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut answered = 0u64;
    while Instant::now() < until {
        let Ok(n) = io.recv(&socket, &mut inbox) else {
            continue;
        };
        for i in 0..n {
            let (p, Some(from)) = inbox.get(i) else {
                continue;
            };
            if p.len() < 16 {
                continue;
            }
            // action and transaction id, echoed back in the same places
            out[..8].copy_from_slice(&p[8..16]);
            let len = match p[11] {
                0 => {
                    out[8..16].copy_from_slice(&p[..8]);
                    16
                }
                1 if p.len() >= 98 => {
                    let numwant = i32::from_be_bytes(p[92..96].try_into().unwrap());
                    let n = if numwant <= 0 {
                        peers
                    } else {
                        (numwant as usize).min(peers)
                    };
                    // interval, leechers, seeders, then n peers (zeros: nobody reads them)
                    out[8..20].fill(0);
                    out[20..20 + 6 * n].fill(0);
                    20 + 6 * n
                }
                2 => {
                    let n = ((p.len() - 16) / 20).min(74);
                    out[8..8 + 12 * n].fill(0);
                    8 + 12 * n
                }
                _ => continue,
            };
            outbox.push(&out[..len], from);
        }
        answered += io.send(&socket, &mut outbox) as u64;
    }
    println!("answered {answered} datagrams in {seconds} s");
    Ok(())
}
