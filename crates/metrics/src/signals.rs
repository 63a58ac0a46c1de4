//! The stop signal of a service process: SIGTERM (Kubernetes, systemd, `kill`) or Ctrl-C.
//!
//! The handlers are installed when [`StopSignals::listen`] (or [`terminated`]) is *called*, not
//! when its future is first polled: a SIGTERM that arrives while a job is still starting (its
//! pre-flight checks, a spawned task not yet scheduled) is then a stop request, not the default
//! action of the signal, which kills the process without draining.

use std::future::Future;

use tokio::signal::unix::{signal, Signal, SignalKind};

/// SIGTERM and SIGINT (Ctrl-C), listened for from the moment [`StopSignals::listen`] returns.
pub struct StopSignals {
    /// `None` where SIGTERM cannot be listened for (it was logged): only Ctrl-C stops.
    term: Option<Signal>,
    interrupt: Option<Signal>,
}

impl StopSignals {
    /// Installs the handlers now. Must be called inside a Tokio runtime (`Runtime::enter`).
    pub fn listen() -> StopSignals {
        let open = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("cannot listen for {name} ({e})");
                None
            }
        };
        StopSignals {
            term: open(SignalKind::terminate(), "SIGTERM"),
            interrupt: open(SignalKind::interrupt(), "SIGINT"),
        }
    }

    /// Resolves on the next SIGTERM or Ctrl-C (never, when neither could be listened for).
    pub async fn recv(&mut self) {
        async fn next(s: &mut Option<Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            _ = next(&mut self.term) => {}
            _ = next(&mut self.interrupt) => {}
        }
    }
}

/// Resolves on the first SIGTERM or Ctrl-C after this call. The handlers are installed by the
/// call itself (inside a Tokio runtime), so call it before spawning the task that awaits it.
pub fn terminated() -> impl Future<Output = ()> + Send + 'static {
    let mut signals = StopSignals::listen();
    async move { signals.recv().await }
}
