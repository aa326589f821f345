//! The status page's HTML, rendered from the JSON snapshot: small SVG line charts of the
//! last hour's requests per second (one per protocol, one line per action; each line's
//! values also in `data-values`, for tests and scrapers), tables for the rest. Every text
//! that comes from outside (none today but torrent hashes) is escaped.

use std::fmt::Write;

use serde_json::Value;

const WIDTH: f64 = 360.0;
const HEIGHT: f64 = 90.0;
const COLOURS: [&str; 3] = ["#2563eb", "#16a34a", "#d97706"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn num(v: &Value) -> String {
    match v.as_u64() {
        Some(n) => {
            // 1234567 -> 1 234 567: readable at a glance.
            let s = n.to_string();
            let mut out = String::new();
            for (i, c) in s.chars().enumerate() {
                if i > 0 && (s.len() - i) % 3 == 0 {
                    out.push('\u{2009}');
                }
                out.push(c);
            }
            out
        }
        None => v.as_f64().map_or("–".into(), |f| format!("{f:.1}")),
    }
}

fn duration(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60);
    match (d, h) {
        (0, 0) => format!("{m} min {} s", secs % 60),
        (0, _) => format!("{h} h {m} min"),
        _ => format!("{d} d {h} h"),
    }
}

/// One chart: the actions of `protocol`, each a polyline scaled to the largest value.
fn chart(out: &mut String, protocol: &str, series: &[&Value], step: u64) {
    let lines: Vec<(String, Vec<f64>)> = series
        .iter()
        .map(|s| {
            let values = s["per_sec"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default();
            (s["action"].as_str().unwrap_or("").to_string(), values)
        })
        .collect();
    let max = lines
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(0.0f64, f64::max);
    let n = lines.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    let _ = write!(
        out,
        r#"<figure><figcaption>{} requests/s, last {} min (peak {max:.1}/s)</figcaption><svg class="chart" data-protocol="{protocol}" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{protocol} requests per second"><rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" class="frame"/>"#,
        protocol.to_uppercase(),
        (n as u64 * step).div_ceil(60),
    );
    for (i, (action, values)) in lines.iter().enumerate() {
        let x = |j: usize| {
            if n <= 1 {
                0.0
            } else {
                j as f64 * WIDTH / (n - 1) as f64
            }
        };
        let y = |v: f64| {
            HEIGHT
                - 4.0
                - if max > 0.0 {
                    v / max * (HEIGHT - 8.0)
                } else {
                    0.0
                }
        };
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(j, v)| format!("{:.1},{:.1}", x(j), y(*v)))
            .collect();
        let data: Vec<String> = values.iter().map(|v| format!("{v}")).collect();
        let _ = write!(
            out,
            r#"<polyline data-action="{action}" data-values="{}" points="{}" fill="none" stroke="{}" stroke-width="1.5"/>"#,
            data.join(","),
            points.join(" "),
            COLOURS[i % COLOURS.len()]
        );
    }
    out.push_str("</svg><div class=\"legend\">");
    for (i, (action, _)) in lines.iter().enumerate() {
        let _ = write!(
            out,
            r#"<span style="color:{}">&#9644; {action}</span> "#,
            COLOURS[i % COLOURS.len()]
        );
    }
    out.push_str("</div></figure>");
}

fn table(out: &mut String, id: &str, head: &[&str], rows: Vec<Vec<String>>) {
    let _ = write!(out, r#"<table id="{id}"><thead><tr>"#);
    for h in head {
        let _ = write!(out, "<th>{h}</th>");
    }
    out.push_str("</tr></thead><tbody>");
    if rows.is_empty() {
        let _ = write!(
            out,
            r#"<tr><td colspan="{}">none yet</td></tr>"#,
            head.len()
        );
    }
    for r in rows {
        out.push_str("<tr>");
        for c in r {
            let _ = write!(out, "<td>{c}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
}

pub fn render(v: &Value) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let step = v["history"]["sample_secs"].as_u64().unwrap_or(30);
    let _ = write!(
        out,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><meta http-equiv="refresh" content="{}"><title>Shoal status</title><link rel="icon" href="data:,"><style>
body{{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#111;background:#fafafa}}
h1{{font-size:1.4em;margin:0 0 .2em}} h2{{font-size:1.1em;margin:1.4em 0 .4em}}
.cards{{display:flex;flex-wrap:wrap;gap:.6em}} .card{{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.5em .8em;min-width:8em}}
.card b{{display:block;font-size:1.3em}} .ok{{color:#16a34a}} .bad{{color:#dc2626}}
.charts{{display:flex;flex-wrap:wrap;gap:1em}} figure{{margin:0;background:#fff;border:1px solid #ddd;border-radius:6px;padding:.5em}}
figcaption{{font-size:.9em;color:#444}} .frame{{fill:#fff;stroke:#eee}} .legend{{font-size:.85em}}
table{{border-collapse:collapse;background:#fff}} th,td{{border:1px solid #ddd;padding:.2em .6em;text-align:right}} th{{background:#f0f0f0}}
td:first-child,th:first-child{{text-align:left;font-family:ui-monospace,monospace}}
</style></head><body>"#,
        step.max(5)
    );
    let db = &v["database"];
    let db_ok = db["up"].as_bool() == Some(true) && db["flushing"].as_bool() == Some(true);
    let _ = write!(
        out,
        r#"<h1>Shoal {}</h1><p>{} mode, up {}, database {} <span class="{}">{}</span>"#,
        esc(v["version"].as_str().unwrap_or("")),
        esc(v["mode"].as_str().unwrap_or("")),
        duration(v["uptime_secs"].as_u64().unwrap_or(0)),
        esc(db["driver"].as_str().unwrap_or("")),
        if db_ok { "ok" } else { "bad" },
        if db_ok { "writing" } else { "NOT writing" },
    );
    match v["cluster"].as_object() {
        Some(c) => {
            let up = c["up"].as_bool() == Some(true);
            let nodes = c["nodes"].as_u64().unwrap_or(0);
            let _ = write!(
                out,
                r#", cluster node {} of {nodes}, bus <span class="{}">{}</span>"#,
                esc(c["node_id"].as_str().unwrap_or("")),
                if up { "ok" } else { "bad" },
                if up { "up" } else { "DOWN" },
            );
        }
        None => out.push_str(", one node"),
    }
    out.push_str("</p><div class=\"cards\" id=\"totals\">");
    let t = &v["totals"];
    let f = &v["families"];
    for (label, val) in [
        ("torrents", &t["torrents"]),
        ("seeders", &t["seeders"]),
        ("leechers", &t["leechers"]),
        ("downloads", &t["downloads"]),
        ("IPv4 peers", &f["ipv4"]),
        ("IPv6 peers", &f["ipv6"]),
        ("WebRTC peers", &f["webrtc"]),
    ] {
        let _ = write!(out, r#"<div class="card">{label}<b>{}</b></div>"#, num(val));
    }
    out.push_str("</div><h2>Requests per second</h2><div class=\"charts\">");
    let series: Vec<&Value> = v["history"]["series"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    for protocol in ["udp", "http", "ws"] {
        let mine: Vec<&Value> = series
            .iter()
            .copied()
            .filter(|s| s["protocol"] == protocol)
            .collect();
        chart(&mut out, protocol, &mine, step);
    }
    out.push_str("</div><h2>Top torrents by peers</h2>");
    let rows = v["top_torrents"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            vec![
                esc(r["info_hash"].as_str().unwrap_or("")),
                num(&r["seeders"]),
                num(&r["leechers"]),
                num(&r["completed"]),
            ]
        })
        .collect();
    table(
        &mut out,
        "top-torrents",
        &["info-hash", "seeders", "leechers", "downloads"],
        rows,
    );
    out.push_str("<h2>Clients</h2>");
    let rows = v["clients"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            vec![
                esc(c["name"].as_str().unwrap_or("")),
                num(&c["announces"]),
                format!("{:.1}%", c["share"].as_f64().unwrap_or(0.0) * 100.0),
            ]
        })
        .collect();
    table(&mut out, "clients", &["client", "announces", "share"], rows);
    out.push_str("<h2>Refusals and errors</h2>");
    let rows = v["refusals"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            vec![
                esc(r["kind"].as_str().unwrap_or("")),
                esc(r["protocol"].as_str().unwrap_or("")),
                num(&r["count"]),
            ]
        })
        .collect();
    table(&mut out, "refusals", &["kind", "protocol", "count"], rows);
    out.push_str(
        "<p>The same as JSON: <code>GET /api/v1/status</code> (with the API token); for Prometheus: <code>/metrics</code>.</p></body></html>",
    );
    out
}
