//! The files operators copy from `deploy/`: the example config says the true defaults, every
//! metric the alert rules and the dashboard name is one `/metrics` serves, and logs can be
//! JSON lines.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

fn deploy(file: &str) -> String {
    let path = format!("{}/../../deploy/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn shoal_config(file: Option<&std::path::Path>, env: &[(&str, &str)]) -> String {
    let mut cmd = command(&["config"]);
    if let Some(f) = file {
        cmd.args(["--config", f.to_str().unwrap()]);
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_example_config_states_the_defaults() {
    let dir = temp_dir();
    // Every commented `#key = value` line switched on must change nothing.
    let text: String = deploy("shoal.toml")
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.contains(" = ") && !rest.starts_with(' ') => rest,
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let example = dir.path().join("shoal.toml");
    std::fs::write(&example, text).unwrap();
    let url = "sqlite:///var/lib/shoal/shoal.db";
    assert_eq!(
        shoal_config(Some(&example), &[]),
        shoal_config(None, &[("SHOAL_DATABASE__URL", url)])
    );
}

/// Metric names (`shoal_…`, `process_…`) a text mentions.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for prefix in ["shoal_", "process_"] {
        for (i, _) in text.match_indices(prefix) {
            if i > 0 && text.as_bytes()[i - 1].is_ascii_alphanumeric() {
                continue;
            }
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            names.insert(name);
        }
    }
    names
}

#[test]
fn every_metric_the_rules_and_the_dashboard_name_is_served() {
    let rules = deploy("prometheus-rules.yml");
    let dashboard = deploy("grafana-dashboard.json");
    serde_json::from_str::<serde_json::Value>(&dashboard).expect("the dashboard is JSON");
    // The rules are valid Prometheus rules (Debian's prometheus package has promtool).
    let promtool = testkit::which("promtool")
        .expect("promtool is not installed; scripts/test installs prometheus");
    let rules_path = format!(
        "{}/../../deploy/prometheus-rules.yml",
        env!("CARGO_MANIFEST_DIR")
    );
    let checked = std::process::Command::new(promtool)
        .args(["check", "rules", &rules_path])
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    // And they fire, and stay quiet, as prometheus-rules.test.yml expects on recorded series.
    let tested = std::process::Command::new(testkit::which("promtool").unwrap())
        .args(["test", "rules"])
        .arg(rules_path.replace("prometheus-rules.yml", "prometheus-rules.test.yml"))
        .output()
        .unwrap();
    assert!(
        tested.status.success(),
        "{}{}",
        String::from_utf8_lossy(&tested.stdout),
        String::from_utf8_lossy(&tested.stderr)
    );
    let mut wanted = metric_names(&rules);
    wanted.extend(metric_names(&dashboard));
    assert!(wanted.len() >= 15, "{wanted:?}");

    // A cluster node serves the bus metrics as well.
    let redis = testkit::Redis::launch().unwrap();
    let db = database("postgres").unwrap();
    let dir = temp_dir();
    let extra = format!(
        "[cluster]\nredis_url = \"{}\"\nnode_id = \"n1\"\nsecret = \"s\"\n",
        redis.url()
    );
    let shoal = Setup {
        db_url: Some(db),
        extra: &extra,
        ..Setup::default()
    }
    .start(dir.path());
    let served: std::collections::BTreeSet<String> = shoal
        .metrics()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect();
    let missing: Vec<_> = wanted.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "named in deploy/ but not served: {missing:?}"
    );
    assert!(shoal.metric("shoal_database_up") == 1);
    assert!(shoal.metric("process_resident_memory_bytes") > 1 << 20);
}

#[test]
fn logs_are_json_lines_when_asked() {
    let dir = temp_dir();
    let cfg = config(dir.path(), "[log]\nformat = \"json\"\n");
    let mut child = command(&["serve", "--config", cfg.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = 0;
    for line in lines.map_while(Result::ok) {
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: not JSON: {line}"));
        assert!(v["timestamp"].is_string() && v["level"].is_string(), "{v}");
        seen += 1;
        let message = v["fields"]["message"].as_str().unwrap_or_default();
        if message.starts_with("ready:") || Instant::now() > deadline {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen >= 3, "only {seen} lines before ready");
}
