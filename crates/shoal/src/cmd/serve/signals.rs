//! The signals `shoal serve` answers, installed before anything slow starts.

use super::super::{Error, Result};

/// The signal table (docs/operations.md, "Signals"): SIGTERM and SIGINT drain and stop,
/// SIGHUP reloads and never stops.
pub(super) struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

pub(super) enum Signal {
    Stop(&'static str),
    Reload,
}

impl Signals {
    pub(super) fn install() -> Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        let on =
            |kind, name: &str| signal(kind).map_err(Error::io(format!("cannot handle {name}")));
        Ok(Signals {
            term: on(SignalKind::terminate(), "SIGTERM")?,
            int: on(SignalKind::interrupt(), "SIGINT")?,
            hup: on(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    /// The next stop signal; a SIGHUP meanwhile has nothing loaded to reload and is logged.
    pub(super) async fn stop(&mut self) -> &'static str {
        loop {
            match self.next().await {
                Signal::Stop(name) => return name,
                Signal::Reload => {
                    tracing::info!("SIGHUP received during start-up: nothing to reload yet")
                }
            }
        }
    }

    pub(super) async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Stop("SIGTERM"),
            _ = self.int.recv() => Signal::Stop("SIGINT"),
            _ = self.hup.recv() => Signal::Reload,
        }
    }
}
