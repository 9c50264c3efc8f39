//! A TCP proxy the tests control, on loopback, between Headwater and a database server: it
//! forwards bytes both ways, and on command cuts every connection (a reset, as when a server
//! restarts or a route goes away) or holds them silent (a black hole: nothing passes, nothing
//! is closed, as when a firewall or NAT drops a connection's state).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Forward,
    BlackHole,
}

#[derive(Clone, Copy, Debug)]
struct State {
    mode: Mode,
    /// Bumped by `cut`: connections opened before it are reset.
    generation: u64,
}

pub struct FaultProxy {
    pub port: u16,
    state: watch::Sender<State>,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `target` (`host:port`).
    pub async fn start(target: &str) -> Self {
        let target: SocketAddr = tokio::net::lookup_host(target)
            .await
            .expect("resolve the proxied server")
            .next()
            .expect("an address for the proxied server");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let (state, _) = watch::channel(State {
            mode: Mode::Forward,
            generation: 0,
        });
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let accept_task = {
            let state = state.clone();
            let accepted = accepted.clone();
            let open = open.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let watch = state.subscribe();
                    let open = open.clone();
                    tokio::spawn(async move {
                        open.fetch_add(1, Ordering::SeqCst);
                        relay(client, target, watch).await;
                        open.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            })
        };
        FaultProxy {
            port,
            state,
            accepted,
            open,
            accept_task,
        }
    }

    /// `url` with its `host:port` replaced by the proxy's.
    pub fn url(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let (credentials, _) = authority
            .rsplit_once('@')
            .map_or(("", authority), |(c, h)| (c, h));
        let at = if credentials.is_empty() { "" } else { "@" };
        let slash = if path.is_empty() && !rest.contains('/') {
            ""
        } else {
            "/"
        };
        format!(
            "{scheme}://{credentials}{at}127.0.0.1:{}{slash}{path}",
            self.port
        )
    }

    /// Resets every open connection; new ones are forwarded.
    pub fn cut(&self) {
        self.state.send_modify(|s| s.generation += 1);
    }

    /// From now on nothing passes either way, on open or new connections; nothing is closed.
    pub fn black_hole(&self) {
        self.state.send_modify(|s| s.mode = Mode::BlackHole);
    }

    /// Bytes pass again (those held during the black hole are delivered).
    pub fn heal(&self) {
        self.state.send_modify(|s| s.mode = Mode::Forward);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections open now (a client that gave up on one closes it).
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
        self.cut();
    }
}

/// Forwards one connection until either side closes it or it is cut.
async fn relay(client: TcpStream, target: SocketAddr, mut watch: watch::Receiver<State>) {
    let born = watch.borrow().generation;
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let mut up = [0u8; 16 * 1024];
    let mut down = [0u8; 16 * 1024];
    loop {
        let state = *watch.borrow_and_update();
        if state.generation != born {
            // a reset, not a FIN: the peer sees "connection reset by peer"
            if let Ok(client) = client_read.reunite(client_write) {
                let _ = client.set_zero_linger();
            }
            return;
        }
        if state.mode == Mode::BlackHole {
            // read nothing, write nothing: bytes wait in the kernel's buffers
            if watch.changed().await.is_err() {
                return;
            }
            continue;
        }
        tokio::select! {
            _ = watch.changed() => {}
            read = client_read.read(&mut up) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => if server_write.write_all(&up[..n]).await.is_err() { return },
            },
            read = server_read.read(&mut down) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => if client_write.write_all(&down[..n]).await.is_err() { return },
            },
        }
    }
}
