//! Client rules (`[clients]`): which BitTorrent clients may announce, by peer-id prefix
//! (Azureus style `-qB4520-`, Shadow style `M7-2-2--`, or any shorter prefix such as
//! `-XL`). A peer id matching a deny rule is refused; with allow rules, one matching none
//! of them is refused too. Each rule counts its refusals for `/metrics`. The rules are
//! swapped whole on reload (SIGHUP), never edited in place, so an announce reads one set.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use arc_swap::ArcSwap;
use protocol::PeerId;

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

/// The rules in force.
pub struct Clients(ArcSwap<Rules>);

impl Default for Clients {
    fn default() -> Self {
        Clients(ArcSwap::from_pointee(Rules::default()))
    }
}

fn rules(prefixes: &[String]) -> Vec<Rule> {
    prefixes
        .iter()
        .map(|p| Rule {
            prefix: p.as_bytes().into(),
            refused: AtomicU64::new(0),
        })
        .collect()
}

impl Clients {
    /// Puts `allow` and `deny` (checked by `config::valid_prefix`) in force; counts start
    /// again.
    pub fn set(&self, allow: &[String], deny: &[String]) {
        self.0.store(Arc::new(Rules {
            allow: rules(allow),
            deny: rules(deny),
            not_allowed: AtomicU64::new(0),
        }));
    }

    /// Deny wins over allow; no rules lets everyone in.
    pub fn check(&self, id: &PeerId) -> Result<(), ClientRefusal> {
        let r = self.0.load();
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
        let r = self.0.load();
        (r.allow.len(), r.deny.len())
    }

    /// `shoal_client_refusals_total{rule=...}`: one series per deny rule, and `allow` for
    /// clients on no allow rule (a label set as bounded as the rules).
    pub fn render(&self, out: &mut Text) {
        let r = self.0.load();
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
        c.set(&s(&["-qB", "-TR"]), &s(&["-qB4520-", "-XL"]));
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
        c.set(&[], &[]);
        assert!(c.check(&id(b"M7-2-2--")).is_ok());
    }
}
