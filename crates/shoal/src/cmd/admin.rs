//! `shoal whitelist …` and `shoal keys …`: the admin API of a running tracker, from the
//! command line. The API's address defaults to the configured `api.bind`, the token to
//! `api.token` (so `SHOAL_API__TOKEN` works); a refusal exits non-zero with the API's reason.

use protocol::{InfoHash, Key};
use serde_json::Value;

use super::client::{Client, Target};
use super::{Error, Result};
use crate::config::Config;

/// Where the running tracker's admin API is.
#[derive(clap::Args)]
pub struct ApiArgs {
    /// The admin API, e.g. http://127.0.0.1:1212 or https://admin.example:1212 (default:
    /// api.bind of the configuration, over HTTPS when api.tls_cert_path is set).
    #[arg(long, value_name = "URL", global = true)]
    pub api: Option<String>,
    /// PEM file to trust for an https:// API (default: the system's roots): CA certificates,
    /// or the API's own self-signed certificate (pinned).
    #[arg(long, value_name = "FILE", global = true)]
    pub ca_cert: Option<std::path::PathBuf>,
    /// TOML configuration file for api.bind and api.token (SHOAL_API__TOKEN also works).
    #[arg(long, short, value_name = "FILE", global = true)]
    pub config: Option<std::path::PathBuf>,
}

/// Change or show the whitelist of a running tracker through its admin API.
#[derive(clap::Args)]
pub struct WhitelistArgs {
    #[command(subcommand)]
    pub action: WhitelistAction,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(clap::Subcommand)]
pub enum WhitelistAction {
    /// List an info-hash (40 hex digits).
    Add { info_hash: InfoHash },
    /// Unlist an info-hash (40 hex digits).
    Remove { info_hash: InfoHash },
    /// Show every listed info-hash.
    List,
}

/// Create, import, remove or show the keys of a running tracker through its admin API.
#[derive(clap::Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub action: KeysAction,
    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(clap::Subcommand)]
pub enum KeysAction {
    /// Create a random key, valid for SECS seconds or forever.
    Add {
        #[arg(long, value_name = "SECS")]
        valid_for: Option<u64>,
    },
    /// Add a key of your own (32 letters and digits).
    Import {
        key: Key,
        #[arg(long, value_name = "UNIX")]
        valid_until: Option<i64>,
    },
    /// Remove a key (32 letters and digits).
    Remove { key: Key },
    /// Show every key.
    List,
}

/// Change or show the client rules of a running tracker (by peer-id prefix) through its
/// admin API; every node of a cluster follows. The configuration's `[clients]` rules are
/// listed too, and changed in the file (SIGHUP).
#[derive(clap::Args)]
pub struct ClientsArgs {
    #[command(subcommand)]
    pub action: ClientsAction,
    #[command(flatten)]
    pub api: ApiArgs,
}

fn prefix(s: &str) -> std::result::Result<String, String> {
    crate::config::valid_prefix(s).map(|()| s.to_string())
}

#[derive(clap::Subcommand)]
pub enum ClientsAction {
    /// Let clients whose peer id starts with PREFIX announce (e.g. -qB, -TR4060-); with any
    /// allow rule, only such clients may.
    Allow {
        #[arg(value_parser = prefix, allow_hyphen_values = true)]
        prefix: String,
    },
    /// Refuse clients whose peer id starts with PREFIX (e.g. -XL, M7-2-2--).
    Deny {
        #[arg(value_parser = prefix, allow_hyphen_values = true)]
        prefix: String,
    },
    /// Remove the stored rule for PREFIX.
    Remove {
        #[arg(value_parser = prefix, allow_hyphen_values = true)]
        prefix: String,
    },
    /// Show every rule: the configuration's and the stored ones.
    List,
}

impl From<ClientsAction> for Order {
    fn from(a: ClientsAction) -> Order {
        match a {
            ClientsAction::Allow { prefix } => Order::Rule(prefix, "allow"),
            ClientsAction::Deny { prefix } => Order::Rule(prefix, "deny"),
            ClientsAction::Remove { prefix } => Order::RemoveRule(prefix),
            ClientsAction::List => Order::ShowRules,
        }
    }
}

impl From<WhitelistAction> for Order {
    fn from(a: WhitelistAction) -> Order {
        match a {
            WhitelistAction::Add { info_hash } => Order::List(info_hash),
            WhitelistAction::Remove { info_hash } => Order::Unlist(info_hash),
            WhitelistAction::List => Order::ShowWhitelist,
        }
    }
}

impl From<KeysAction> for Order {
    fn from(a: KeysAction) -> Order {
        match a {
            KeysAction::Add { valid_for } => Order::NewKey { valid_for },
            KeysAction::Import { key, valid_until } => Order::ImportKey { key, valid_until },
            KeysAction::Remove { key } => Order::RemoveKey(key),
            KeysAction::List => Order::ShowKeys,
        }
    }
}

/// What to ask the API; info-hashes and keys are typed, so nothing else reaches a URL path.
pub enum Order {
    List(InfoHash),
    Unlist(InfoHash),
    ShowWhitelist,
    NewKey {
        valid_for: Option<u64>,
    },
    ImportKey {
        key: Key,
        valid_until: Option<i64>,
    },
    RemoveKey(Key),
    ShowKeys,
    /// A prefix (checked by `config::valid_prefix`) and its kind.
    Rule(String, &'static str),
    RemoveRule(String),
    ShowRules,
}

/// The API's base URL: `--api`, else `api.bind` (an unspecified address means this host),
/// over HTTPS when the configuration gives the API a certificate.
fn base(api: Option<&str>, config: &Config) -> String {
    if let Some(a) = api {
        return a.trim_end_matches('/').to_string();
    }
    let mut bind = config.api.bind;
    if bind.ip().is_unspecified() {
        bind.set_ip(if bind.is_ipv6() {
            "::1".parse().unwrap()
        } else {
            [127, 0, 0, 1].into()
        });
    }
    let scheme = if config.api.tls().is_some() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{bind}")
}

pub fn run(args: &ApiArgs, config: &Config, order: Order) -> Result<()> {
    let client = Client::new(args.ca_cert.as_deref())?;
    let base = base(args.api.as_deref(), config);
    let token = config.api.token.expose();
    let call = |method: &str, path: &str, body: Option<&str>| -> Result<(u16, Value)> {
        let t = Target::parse(&format!("{base}/api/v1{path}"))?;
        let auth = [format!("Authorization: Bearer {token}")];
        let headers: &[String] = if token.is_empty() { &[] } else { &auth };
        let (status, body) = client.request(method, &t, headers, body)?;
        let v: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).map_err(|source| Error::NotJson { status, source })?
        };
        if (200..300).contains(&status) {
            Ok((status, v))
        } else {
            let why = v["error"]
                .as_str()
                .map_or_else(|| v.to_string(), str::to_string);
            Err(Error::Refused { status, why })
        }
    };
    let until = |v: &Value| match v["valid_until"].as_i64() {
        Some(t) => format!("valid until {t} (unix)"),
        None => "never expires".into(),
    };
    match order {
        Order::List(h) => {
            let (status, v) = call("PUT", &format!("/whitelist/{}", h.to_hex()), None)?;
            let what = if status == 201 {
                "listed"
            } else {
                "was already listed"
            };
            println!(
                "{} {what} (since {})",
                v["info_hash"].as_str().unwrap_or(&h.to_hex()),
                v["added_at"]
            );
        }
        Order::Unlist(h) => {
            call("DELETE", &format!("/whitelist/{}", h.to_hex()), None)?;
            println!("{h} unlisted");
        }
        Order::ShowWhitelist => {
            let (_, v) = call("GET", "/whitelist", None)?;
            for e in v.as_array().into_iter().flatten() {
                println!(
                    "{} {}",
                    e["info_hash"].as_str().unwrap_or("?"),
                    e["added_at"]
                );
            }
        }
        Order::NewKey { valid_for } => {
            let body = match valid_for {
                Some(s) => serde_json::json!({ "valid_for_secs": s }).to_string(),
                None => "{}".to_string(),
            };
            let (_, v) = call("POST", "/keys", Some(&body))?;
            println!("{} {}", v["key"].as_str().unwrap_or("?"), until(&v));
        }
        Order::ImportKey { key, valid_until } => {
            let body =
                serde_json::json!({ "key": key.as_str(), "valid_until": valid_until }).to_string();
            let (_, v) = call("POST", "/keys", Some(&body))?;
            println!(
                "{} imported, {}",
                v["key"].as_str().unwrap_or(key.as_str()),
                until(&v)
            );
        }
        Order::RemoveKey(k) => {
            call("DELETE", &format!("/keys/{}", k.as_str()), None)?;
            println!("{k} removed");
        }
        Order::Rule(prefix, kind) => {
            let body = serde_json::json!({ "kind": kind }).to_string();
            let path = format!("/clients/{}", protocol::percent::encode(prefix.as_bytes()));
            let (status, _) = call("PUT", &path, Some(&body))?;
            let what = if status == 201 { "added" } else { "now" };
            println!("{kind} {prefix} ({what})");
        }
        Order::RemoveRule(prefix) => {
            let path = format!("/clients/{}", protocol::percent::encode(prefix.as_bytes()));
            call("DELETE", &path, None)?;
            println!("{prefix} removed");
        }
        Order::ShowRules => {
            let (_, v) = call("GET", "/clients", None)?;
            for kind in ["allow", "deny"] {
                for p in v["config"][kind].as_array().into_iter().flatten() {
                    println!("{kind} {} (configuration)", p.as_str().unwrap_or("?"));
                }
            }
            for r in v["stored"].as_array().into_iter().flatten() {
                println!(
                    "{} {} (since {})",
                    r["kind"].as_str().unwrap_or("?"),
                    r["prefix"].as_str().unwrap_or("?"),
                    r["added_at"]
                );
            }
        }
        Order::ShowKeys => {
            let (_, v) = call("GET", "/keys", None)?;
            for k in v.as_array().into_iter().flatten() {
                println!("{} {}", k["key"].as_str().unwrap_or("?"), until(k));
            }
        }
    }
    Ok(())
}
