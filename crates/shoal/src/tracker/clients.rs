//! Client rules: which BitTorrent clients may announce, by peer-id prefix (Azureus style
//! `-qB4520-`, Shadow style `M7-2-2--`, or any shorter prefix such as `-XL`). A peer id
//! matching a deny rule is refused; with allow rules, one matching none of them is refused
//! too. The rules in force are the union of two sources: `[clients]` in the configuration
//! (reloaded on SIGHUP) and the store's `client_rules` (the admin API; every node reloads
//! them on a notice). Each rule counts its refusals for `/metrics`, and keeps its count
//! across reloads. The rules are swapped whole, never edited in place, so an announce reads
//! one set.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use protocol::PeerId;
use store::{ClientRule, RuleKind};

use super::metrics::Text;

/// One prefix and the refusals it caused.
struct Rule {
    prefix: Box<[u8]>,
    refused: AtomicU64,
}

/// Why a client was refused: the rule that names it, as the client and the metrics read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRefusal {
    /// `deny:<prefix>`, or `allow` when allow rules exist and none matched.
    pub rule: String,
}

impl std::fmt::Display for ClientRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.rule.strip_prefix("deny:") {
            Some(p) => write!(f, "client refused by rule deny {p}"),
            None => f.write_str("client refused: not on the allow list"),
        }
    }
}

#[derive(Default)]
struct Rules {
    allow: Vec<Rule>,
    deny: Vec<Rule>,
    /// Refusals of clients that matched no allow rule.
    not_allowed: AtomicU64,
}

/// The rules in force, and the two sources they are made of.
pub struct Clients {
    rules: ArcSwap<Rules>,
    sources: Mutex<Sources>,
}

#[derive(Default)]
struct Sources {
    config_allow: Vec<String>,
    config_deny: Vec<String>,
    stored: Vec<ClientRule>,
}

impl Default for Clients {
    fn default() -> Self {
        Clients {
            rules: ArcSwap::from_pointee(Rules::default()),
            sources: Mutex::default(),
        }
    }
}

/// `prefixes` as rules, each keeping the count it had in `old`.
fn rules(prefixes: Vec<&str>, old: &[Rule]) -> Vec<Rule> {
    let mut seen = std::collections::HashSet::new();
    prefixes
        .into_iter()
        .filter(|p| seen.insert(*p))
        .map(|p| Rule {
            prefix: p.as_bytes().into(),
            refused: AtomicU64::new(
                old.iter()
                    .find(|r| *r.prefix == *p.as_bytes())
                    .map_or(0, |r| r.refused.load(Relaxed)),
            ),
        })
        .collect()
}

impl Clients {
    /// The configuration's rules (checked by `config::valid_prefix`).
    pub fn set_config(&self, allow: &[String], deny: &[String]) {
        let mut s = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        s.config_allow = allow.to_vec();
        s.config_deny = deny.to_vec();
        self.rebuild(&s);
    }

    /// The store's rules, as `load_client_rules` returned them.
    pub fn set_stored(&self, stored: Vec<ClientRule>) {
        let mut s = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        s.stored = stored;
        self.rebuild(&s);
    }

    /// The configuration's allow and deny lists, and the store's rules.
    pub fn sources(&self) -> (Vec<String>, Vec<String>, Vec<ClientRule>) {
        let s = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        (
            s.config_allow.clone(),
            s.config_deny.clone(),
            s.stored.clone(),
        )
    }

    fn rebuild(&self, s: &Sources) {
        let old = self.rules.load();
        let of = |kind, config: &[String]| -> Vec<String> {
            config
                .iter()
                .cloned()
                .chain(
                    s.stored
                        .iter()
                        .filter(|r| r.kind == kind)
                        .map(|r| r.prefix.clone()),
                )
                .collect()
        };
        let (allow, deny) = (
            of(RuleKind::Allow, &s.config_allow),
            of(RuleKind::Deny, &s.config_deny),
        );
        self.rules.store(Arc::new(Rules {
            allow: rules(allow.iter().map(String::as_str).collect(), &old.allow),
            deny: rules(deny.iter().map(String::as_str).collect(), &old.deny),
            not_allowed: AtomicU64::new(old.not_allowed.load(Relaxed)),
        }));
    }

    /// Deny wins over allow; no rules lets everyone in.
    pub fn check(&self, id: &PeerId) -> Result<(), ClientRefusal> {
        let r = self.rules.load();
        if let Some(d) = r.deny.iter().find(|d| id.0.starts_with(&d.prefix)) {
            d.refused.fetch_add(1, Relaxed);
            return Err(ClientRefusal {
                rule: format!("deny:{}", String::from_utf8_lossy(&d.prefix)),
            });
        }
        if !r.allow.is_empty() && !r.allow.iter().any(|a| id.0.starts_with(&a.prefix)) {
            r.not_allowed.fetch_add(1, Relaxed);
            return Err(ClientRefusal {
                rule: "allow".into(),
            });
        }
        Ok(())
    }

    /// How many rules of each kind are in force.
    pub fn len(&self) -> (usize, usize) {
        let r = self.rules.load();
        (r.allow.len(), r.deny.len())
    }

    /// `shoal_client_refusals_total{rule=...}`: one series per deny rule, and `allow` for
    /// clients on no allow rule (a label set as bounded as the rules).
    pub fn render(&self, out: &mut Text) {
        let r = self.rules.load();
        out.family(
            "shoal_client_refusals_total",
            "counter",
            "Announces refused by a client rule ([clients]), by rule.",
        );
        for d in &r.deny {
            let rule = format!("deny:{}", String::from_utf8_lossy(&d.prefix));
            out.sample(
                "shoal_client_refusals_total",
                &[("rule", &rule)],
                d.refused.load(Relaxed),
            );
        }
        if !r.allow.is_empty() {
            out.sample(
                "shoal_client_refusals_total",
                &[("rule", "allow")],
                r.not_allowed.load(Relaxed),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(prefix: &[u8]) -> PeerId {
        let mut b = [b'0'; 20];
        b[..prefix.len()].copy_from_slice(prefix);
        PeerId(b)
    }

    #[test]
    fn deny_wins_allow_restricts_and_no_rules_let_everyone_in() {
        let c = Clients::default();
        assert!(c.check(&id(b"-XL0012-")).is_ok());
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        c.set_config(&s(&["-qB", "-TR"]), &s(&["-qB4520-"]));
        c.set_stored(vec![ClientRule {
            prefix: "-XL".into(),
            kind: RuleKind::Deny,
            added_at: 1,
        }]);
        assert!(c.check(&id(b"-qB5010-")).is_ok());
        assert!(c.check(&id(b"-TR4060-")).is_ok());
        let e = c.check(&id(b"-qB4520-")).unwrap_err();
        assert_eq!(e.rule, "deny:-qB4520-");
        assert_eq!(e.to_string(), "client refused by rule deny -qB4520-");
        assert_eq!(c.check(&id(b"-XL0012-")).unwrap_err().rule, "deny:-XL");
        assert_eq!(c.check(&id(b"M7-2-2--")).unwrap_err().rule, "allow");
        let mut text = Text::default();
        c.render(&mut text);
        let text = text.into_string();
        for line in [
            "shoal_client_refusals_total{rule=\"deny:-qB4520-\"} 1",
            "shoal_client_refusals_total{rule=\"deny:-XL\"} 1",
            "shoal_client_refusals_total{rule=\"allow\"} 1",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        // A reload keeps the counts of the rules that stay.
        c.set_stored(Vec::new());
        let mut text = Text::default();
        c.render(&mut text);
        let text = text.into_string();
        assert!(
            text.contains("shoal_client_refusals_total{rule=\"deny:-qB4520-\"} 1"),
            "{text}"
        );
        assert!(!text.contains("-XL"), "{text}");
        c.set_config(&[], &[]);
        assert!(c.check(&id(b"M7-2-2--")).is_ok());
    }
}
