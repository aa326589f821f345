//! `bench udp-swarm --expire-secs`: a tracker's answers timed while its expiry removes a
//! quarter of the swarm (docs/benchmarking.md, "Internet scale"). The quarter
//! (`Population::expiring`) is filled first, then after `--expire-gap` seconds the rest, so
//! the quarter is due a gap before anyone else; then random peers of the rest re-announce at
//! a fixed rate, open loop, so a tracker that stalls shows it as latency rather than as a
//! slower generator. The busiest torrent's count, read from the answers, dates the expiry:
//! it only falls when the tracker removes silent peers.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::population::mix;
use super::udp_swarm::{Args, Load, Phase, Tally, go, line, start};
use crate::cmd::{Error, Result};

/// `udp-swarm --expire-secs`: the fill, then the timed phase; a JSON line each.
pub fn main(a: &Args) -> Result<()> {
    let (sizes, mut load) = start(a)?;
    let &[size] = sizes.as_slice() else {
        return Err(Error::Said("--expire-secs takes one size".into()));
    };
    go(a);
    let started = Instant::now();
    let t = fill(&mut load, size, a.expire_gap);
    line(json!({
        "phase": "filled", "peers": size, "secs": started.elapsed().as_secs_f64(),
        "announces": t.announces, "expected": size, "connects": t.connects,
        "errors": t.errors, "lost": t.lost,
    }));
    go(a);
    let until = started + Duration::from_secs(a.expire_secs);
    line(run(&mut load, size, a.expire_rate, until));
    Ok(())
}

/// The fill: the expiring quarter, `gap` seconds of silence, the rest.
fn fill(load: &mut Load, size: u64, gap: u64) -> Tally {
    let quarter = size.div_ceil(4);
    let mut total = Tally::default();
    for (from, to) in [(0, quarter), (quarter, size)] {
        if from > 0 {
            std::thread::sleep(Duration::from_secs(gap));
        }
        let mut k = from;
        let t = load.run(
            || {
                (k < to).then(|| {
                    k += 1;
                    fill_order(k - 1, size)
                })
            },
            Phase::Fill,
        );
        total.connects += t.connects;
        total.announces += t.announces;
        total.errors += t.errors;
        total.lost += t.lost;
    }
    total
}

/// Peer number of the `k`-th fill: the expiring quarter (every fourth peer) first, then the
/// rest in order.
fn fill_order(k: u64, size: u64) -> u64 {
    let quarter = size.div_ceil(4);
    if k < quarter {
        4 * k
    } else {
        let j = k - quarter;
        j + j / 3 + 1
    }
}

/// One second of answers: their latencies (µs) and the busiest torrent's last count.
#[derive(Default)]
struct Second {
    micros: Vec<u32>,
    top: Option<u32>,
}

/// The expiry phase: random kept peers re-announcing at `rate` per second until `until`.
fn run(load: &mut Load, size: u64, rate: u64, until: Instant) -> Value {
    let quarter = size.div_ceil(4);
    let kept = (size - quarter).max(1);
    // When each peer's request in flight went, in µs since the phase began, plus one (0: none).
    let mut sent_at = vec![0u32; size as usize];
    let mut seconds: Vec<Second> = Vec::new();
    let (mut sent, mut errors, mut k) = (0u64, 0u64, 0u64);
    let mut again: Vec<u64> = Vec::new();
    let t0 = Instant::now();
    let micros = |t0: Instant| t0.elapsed().as_micros() as u32 + 1;
    let end = until.saturating_duration_since(t0);
    // A second after the end for the last answers; what has not come by then was lost.
    while t0.elapsed() < end + Duration::from_secs(1) {
        let sending = t0.elapsed() < end;
        let due = (t0.elapsed().as_secs_f64() * rate as f64) as u64;
        // Bursts stay short so answers are read (and timed) as they come.
        let mut burst = 0;
        while ((sending && sent < due) || !again.is_empty()) && burst < 1024 {
            burst += 1;
            let i = again.pop().unwrap_or_else(|| {
                sent += 1;
                k += 1;
                fill_order(quarter + mix(k) % kept, size)
            });
            load.queue(i, Phase::Steady);
            sent_at[i as usize] = micros(t0);
            if load.wire.out.len() == 64 {
                load.wire.flush();
            }
        }
        load.wire.flush();
        let now_secs = load.secs();
        let pop = load.pop;
        let Load {
            wire, ids, issued, ..
        } = load;
        let got = wire.recv_with(libc::MSG_DONTWAIT, |d| {
            if d.len() < 8 {
                return;
            }
            let action = u32::from_be_bytes(d[..4].try_into().unwrap());
            let i = u64::from(u32::from_be_bytes(d[4..8].try_into().unwrap()));
            let Some(at) = sent_at.get_mut(i as usize).filter(|a| **a != 0) else {
                return;
            };
            let now = micros(t0);
            let sec = (now / 1_000_000) as usize;
            if seconds.len() <= sec {
                seconds.resize_with(sec + 1, Second::default);
            }
            seconds[sec].micros.push(now.saturating_sub(*at));
            *at = 0;
            match action {
                0 if d.len() >= 16 => {
                    let a = Load::address(i);
                    ids[a] = u64::from_be_bytes(d[8..16].try_into().unwrap());
                    issued[a] = now_secs;
                    again.push(i);
                }
                1 if d.len() >= 20 && pop.rank(i) == 0 => {
                    let n =
                        |r: std::ops::Range<usize>| u32::from_be_bytes(d[r].try_into().unwrap());
                    seconds[sec].top = Some(n(12..16) + n(16..20));
                }
                1 => {}
                _ => errors += 1,
            }
        });
        if got == 0 {
            std::thread::yield_now();
        }
    }
    let lost = sent_at.iter().filter(|a| **a != 0).count();
    summary(&seconds, size, quarter, rate, end.as_secs(), errors, lost)
}

fn summary(
    seconds: &[Second],
    size: u64,
    quarter: u64,
    rate: u64,
    secs: u64,
    errors: u64,
    lost: usize,
) -> Value {
    // The busiest torrent's count each second, carried over seconds without an answer for it.
    let mut last = None;
    let tops: Vec<Option<u32>> = seconds
        .iter()
        .map(|s| {
            last = s.top.or(last);
            last
        })
        .collect();
    // Nobody leaves but the silent: every fall of the count is the expiry at work.
    let falls: Vec<usize> = (1..tops.len())
        .filter(|&s| matches!((tops[s - 1], tops[s]), (Some(a), Some(b)) if b < a))
        .collect();
    let window = falls
        .first()
        .zip(falls.last())
        .map(|(a, b)| (a.saturating_sub(1), (b + 1).min(seconds.len() - 1)));
    let pick = |keep: &dyn Fn(usize) -> bool| {
        let mut v: Vec<u32> = seconds
            .iter()
            .enumerate()
            .filter(|(s, _)| keep(*s))
            .flat_map(|(_, x)| x.micros.iter().copied())
            .collect();
        percentiles(&mut v)
    };
    let (during, before) = match window {
        Some((a, b)) => (pick(&|s| s >= a && s <= b), pick(&|s| s < a)),
        None => (Value::Null, pick(&|_| true)),
    };
    json!({
        "phase": "expiry", "peers": size, "silent": quarter, "rate": rate, "secs": secs,
        "errors": errors, "lost": lost,
        "top_swarm": {
            "before": window.and_then(|(a, _)| tops[a]),
            "after": tops.last().copied().flatten(),
        },
        "window": window.map(|(a, b)| json!({"from": a, "to": b})),
        "all": pick(&|_| true),
        "before": before,
        "during": during,
        "seconds": seconds.iter().zip(&tops).enumerate().map(|(s, (x, top))| {
            let mut v = x.micros.clone();
            let p = percentiles(&mut v);
            json!({"s": s, "answers": x.micros.len(), "p99_us": p["p99_us"], "max_us": p["max_us"], "top": top})
        }).collect::<Vec<_>>(),
    })
}

fn percentiles(v: &mut [u32]) -> Value {
    v.sort_unstable();
    let at = |q: f64| {
        v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1)))
            .copied()
    };
    json!({
        "answers": v.len(), "p50_us": at(0.5), "p99_us": at(0.99), "p999_us": at(0.999),
        "max_us": v.last().copied(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::population::Population;

    #[test]
    fn the_fill_order_is_every_peer_once_the_expiring_quarter_first() {
        for size in [1u64, 2, 3, 4, 5, 9, 10, 11, 12, 1001] {
            let order: Vec<u64> = (0..size).map(|k| fill_order(k, size)).collect();
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..size).collect::<Vec<_>>(), "size {size}");
            let q = size.div_ceil(4) as usize;
            assert!(order[..q].iter().all(|&i| Population::expiring(i)));
            assert!(order[q..].iter().all(|&i| !Population::expiring(i)));
        }
    }

    #[test]
    fn the_window_spans_the_seconds_where_the_busiest_swarm_shrinks() {
        let sec = |top: Option<u32>, lat: u32| Second {
            micros: vec![lat; 10],
            top,
        };
        let s = vec![
            sec(Some(100), 5),
            sec(Some(100), 5),
            sec(None, 5),
            sec(Some(90), 900),
            sec(Some(75), 50),
            sec(Some(75), 5),
            sec(Some(75), 5),
        ];
        let v = summary(&s, 8, 2, 10, 7, 0, 0);
        assert_eq!(v["window"], json!({"from": 2, "to": 5}));
        assert_eq!(v["top_swarm"], json!({"before": 100, "after": 75}));
        assert_eq!(v["during"]["max_us"], 900);
        assert_eq!(v["before"]["max_us"], 5);
        assert_eq!(v["before"]["answers"], 20);
    }
}
