//! The stop signal of a service process: SIGTERM (Kubernetes, systemd, `kill`) or Ctrl-C.

/// Resolves on the first SIGTERM or Ctrl-C. Where SIGTERM cannot be listened for (it is
/// logged), only Ctrl-C stops.
pub async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!("cannot listen for SIGTERM ({e}): only Ctrl-C stops this process");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
