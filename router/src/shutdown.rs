//! Graceful shutdown: one future that resolves on SIGTERM or Ctrl-C, shared by every
//! binary (engine roles, the gateway, the archiver).

/// Resolves when the process is asked to stop (SIGTERM or Ctrl-C). If the SIGTERM
/// handler cannot be installed, only Ctrl-C stops it.
pub async fn signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
