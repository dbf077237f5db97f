//! A TCP proxy in front of a MariaDB server that loses COMMIT replies: it forwards a
//! client's `COMMIT` statement (a query packet of exactly that text), lets the server finish it, then cuts the
//! connection before the reply reaches the client — the "outcome unknown" a real
//! network produces. Optionally it then refuses new connections until healed (the
//! server looks gone), so a client's follow-up look fails too.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running proxy; stops when dropped.
#[derive(Debug)]
pub struct CommitCutter {
    /// Its port on 127.0.0.1.
    pub port: u16,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Default)]
struct State {
    /// COMMIT replies still to lose.
    cuts: AtomicU32,
    /// Refuse connections after a cut, until healed.
    refuse_after_cut: AtomicBool,
    refusing: AtomicBool,
    /// Replies lost so far.
    cut: AtomicU32,
}

impl CommitCutter {
    /// A proxy to `upstream` (`host:port`) that loses the next `cuts` COMMIT replies.
    ///
    /// # Panics
    /// When it cannot listen.
    pub async fn start(upstream: String, cuts: u32, refuse_after_cut: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(State::default());
        state.cuts.store(cuts, Ordering::SeqCst);
        state
            .refuse_after_cut
            .store(refuse_after_cut, Ordering::SeqCst);
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if st.refusing.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let (st, upstream) = (st.clone(), upstream.clone());
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        pipe(client, server, st).await;
                    }
                });
            }
        });
        Self { port, state, task }
    }

    /// COMMIT replies lost so far.
    pub fn cut(&self) -> u32 {
        self.state.cut.load(Ordering::SeqCst)
    }

    /// Accept connections again and lose no more replies.
    pub fn heal(&self) {
        self.state.cuts.store(0, Ordering::SeqCst);
        self.state.refusing.store(false, Ordering::SeqCst);
    }
}

impl Drop for CommitCutter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pipe(client: TcpStream, server: TcpStream, st: Arc<State>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let cutting = Arc::new(AtomicBool::new(false));
    let c2 = cutting.clone();
    let down = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if c2.load(Ordering::SeqCst) {
                return; // the reply to the COMMIT: lost
            }
            if cw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match cr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // a COM_QUERY packet of exactly `COMMIT`: 3-byte length 7, sequence, 0x03
        let commit =
            n == 11 && buf[..3] == [7, 0, 0] && buf[4..11].eq_ignore_ascii_case(b"\x03COMMIT");
        let cut = commit
            && st
                .cuts
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| c.checked_sub(1))
                .is_ok();
        if cut {
            st.cut.fetch_add(1, Ordering::SeqCst);
            cutting.store(true, Ordering::SeqCst);
            if st.refuse_after_cut.load(Ordering::SeqCst) {
                st.refusing.store(true, Ordering::SeqCst);
            }
        }
        if sw.write_all(&buf[..n]).await.is_err() {
            break;
        }
        if cut {
            // let the server finish the COMMIT, then cut both ways
            tokio::time::sleep(Duration::from_millis(300)).await;
            break;
        }
    }
    down.abort();
}
