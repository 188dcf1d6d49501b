//! One TCP proxy for every fault test: it can delay each new connection, stall traffic,
//! break the connections open now (and take new ones), cut every connection (and refuse
//! new ones), now or from the Nth new connection on, be restored, spread connections
//! over several upstreams as a load balancer does, put its upstream at a distance
//! (a one-way latency and a bandwidth per connection, as a remote S3 has), and edit what
//! the upstream answers (a server that says it is an older version).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

/// What the proxy does to traffic right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Bytes flow.
    Up,
    /// Connections stay open but no byte moves.
    Stalled,
    /// Every connection is closed; new ones are closed at once.
    Cut,
}

/// What the path between client and upstream costs each connection.
#[derive(Clone, Copy, Debug, Default)]
struct Link {
    /// Added to every chunk, each way.
    one_way: Duration,
    /// Bytes a second each way of one connection; `None`: as fast as loopback.
    bytes_per_sec: Option<u64>,
}

/// Edits a chunk of what the upstream sends, in place.
type ReplyEdit = Arc<dyn Fn(&mut [u8]) + Send + Sync>;

/// A proxy on 127.0.0.1 in front of `upstream`. Dropping the handle leaves it forwarding
/// until the test ends.
#[derive(Debug)]
pub struct ChaosProxy {
    /// Where clients connect.
    pub address: SocketAddr,
    mode: Arc<watch::Sender<Mode>>,
    /// New connections still let through before the proxy cuts; negative: no limit.
    allowance: Arc<AtomicI64>,
    /// Wakes the relays of the connections open now, which then close.
    severed: Arc<Notify>,
}

impl ChaosProxy {
    /// A proxy that forwards at once.
    pub async fn start(upstream: SocketAddr) -> Arc<Self> {
        Self::spawn(upstream, Duration::ZERO, false).await
    }

    /// A proxy that waits `delay` before connecting each accepted client upstream, so
    /// every new connection through it costs that much latency.
    pub async fn with_connect_delay(upstream: SocketAddr, delay: Duration) -> Arc<Self> {
        Self::spawn(upstream, delay, false).await
    }

    /// A proxy that holds only its first connection for `delay`: a one-time cost of
    /// reaching the dependency, like a slow first handshake.
    pub async fn with_first_connect_delay(upstream: SocketAddr, delay: Duration) -> Arc<Self> {
        Self::spawn(upstream, delay, true).await
    }

    /// A load balancer in front of `upstreams`: each new connection goes to the next one,
    /// skipping those that refuse connections (a dead instance), as a load balancer's
    /// health checks would.
    pub async fn round_robin(upstreams: Vec<SocketAddr>) -> Arc<Self> {
        Self::spawn_over(upstreams, Duration::ZERO, false, Link::default(), None).await
    }

    /// A proxy that passes every chunk `upstream` sends through `edit` before the client
    /// gets it (a pattern split across two chunks is not seen whole).
    pub async fn editing_replies(
        upstream: SocketAddr,
        edit: impl Fn(&mut [u8]) + Send + Sync + 'static,
    ) -> Arc<Self> {
        let edit: ReplyEdit = Arc::new(edit);
        Self::spawn_over(
            vec![upstream],
            Duration::ZERO,
            false,
            Link::default(),
            Some(edit),
        )
        .await
    }

    /// A proxy that puts `upstream` at a distance: every chunk arrives `one_way` late,
    /// each way, and each connection moves at most `bytes_per_sec` each way, so clients
    /// reach the throughput they would over a long path only with many connections.
    pub async fn at_a_distance(
        upstream: SocketAddr,
        one_way: Duration,
        bytes_per_sec: u64,
    ) -> Arc<Self> {
        let link = Link {
            one_way,
            bytes_per_sec: Some(bytes_per_sec.max(1)),
        };
        Self::spawn_over(vec![upstream], Duration::ZERO, false, link, None).await
    }

    async fn spawn(upstream: SocketAddr, delay: Duration, first_only: bool) -> Arc<Self> {
        Self::spawn_over(vec![upstream], delay, first_only, Link::default(), None).await
    }

    async fn spawn_over(
        upstreams: Vec<SocketAddr>,
        delay: Duration,
        first_only: bool,
        link: Link,
        edit: Option<ReplyEdit>,
    ) -> Arc<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let address = listener.local_addr().expect("proxy address");
        let (mode, watcher) = watch::channel(Mode::Up);
        let mode = Arc::new(mode);
        let allowance = Arc::new(AtomicI64::new(-1));
        let upstreams = Arc::new(upstreams);
        let severed = Arc::new(Notify::new());
        let (cutter, counted, severing) = (mode.clone(), allowance.clone(), severed.clone());
        tokio::spawn(async move {
            let mut delay = delay;
            let mut next = 0;
            while let Ok((client, _)) = listener.accept().await {
                if counted.load(Ordering::SeqCst) == 0 {
                    cutter.send_replace(Mode::Cut);
                    counted.store(-1, Ordering::SeqCst);
                }
                if *watcher.borrow() == Mode::Cut {
                    continue;
                }
                if counted.load(Ordering::SeqCst) > 0 {
                    counted.fetch_sub(1, Ordering::SeqCst);
                }
                let order: Vec<SocketAddr> = (0..upstreams.len())
                    .map(|offset| upstreams[(next + offset) % upstreams.len()])
                    .collect();
                next += 1;
                tokio::spawn(relay(
                    client,
                    order,
                    (delay, link, edit.clone()),
                    watcher.clone(),
                    severing.clone(),
                ));
                if first_only {
                    delay = Duration::ZERO;
                }
            }
        });
        Arc::new(Self {
            address,
            mode,
            allowance,
            severed,
        })
    }

    /// Stops every byte without closing anything, as a hung dependency does.
    pub fn stall(&self) {
        self.mode.send_replace(Mode::Stalled);
    }

    /// Closes every connection open now and keeps taking new ones, as a network that
    /// broke the connections in use and came straight back.
    pub fn sever(&self) {
        self.severed.notify_waiters();
    }

    /// Closes every connection and refuses new ones, as a dependency that went away.
    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    /// Lets the next `connections` new connections through, then cuts as [`Self::cut`]
    /// does: with a backend that closes its connection after every response (moto), the
    /// requests after the first `connections` fail.
    pub fn cut_after_connections(&self, connections: u32) {
        self.allowance
            .store(i64::from(connections), Ordering::SeqCst);
    }

    /// Lets traffic flow again, without a limit on connections.
    pub fn restore(&self) {
        self.allowance.store(-1, Ordering::SeqCst);
        self.mode.send_replace(Mode::Up);
    }

    /// `scheme://127.0.0.1:PORT` followed by `rest`, for URLs through the proxy.
    pub fn url(&self, scheme: &str, rest: &str) -> String {
        format!("{scheme}://{}{rest}", self.address)
    }
}

/// Relays `client` to the first of `upstreams` that accepts a connection.
async fn relay(
    client: TcpStream,
    upstreams: Vec<SocketAddr>,
    (delay, link, edit): (Duration, Link, Option<ReplyEdit>),
    mode: watch::Receiver<Mode>,
    severed: Arc<Notify>,
) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut server = None;
    for upstream in upstreams {
        if let Ok(connected) = TcpStream::connect(upstream).await {
            server = Some(connected);
            break;
        }
    }
    let Some(server) = server else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        () = pump(client_read, server_write, mode.clone(), link, None) => {}
        () = pump(server_read, client_write, mode.clone(), link, edit) => {}
        () = cut(mode) => {}
        () = severed.notified() => {}
    }
}

/// Copies one direction; a read chunk is held, not lost, while the proxy is stalled.
async fn pump(
    from: tokio::net::tcp::OwnedReadHalf,
    to: tokio::net::tcp::OwnedWriteHalf,
    mode: watch::Receiver<Mode>,
    link: Link,
    edit: Option<ReplyEdit>,
) {
    if link.one_way.is_zero() && link.bytes_per_sec.is_none() {
        copy(from, to, mode, edit).await;
    } else {
        carry(from, to, mode, link).await;
    }
}

/// Copies one direction as it arrives, through `edit` if there is one.
async fn copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
    edit: Option<ReplyEdit>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) => {
                // Half-close: pass the end on and let the other direction finish.
                let _ = to.shutdown().await;
                std::future::pending::<()>().await;
                return;
            }
            Err(_) => return,
            Ok(read) => read,
        };
        if let Some(edit) = &edit {
            edit(&mut buffer[..read]);
        }
        // A dropped handle leaves the proxy as it was: it keeps forwarding.
        let _ = mode.wait_for(|mode| *mode == Mode::Up).await;
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

/// Copies one direction over `link`: each chunk leaves when the connection's bandwidth
/// allows, and is written `one_way` later; chunks in flight meanwhile are many, as on a
/// long path (a bandwidth-delay product of them), not one at a time.
async fn carry(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
    link: Link,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<(Instant, Vec<u8>)>(256);
    let deliver = async move {
        while let Some((arrival, chunk)) = receiver.recv().await {
            tokio::time::sleep_until(arrival.into()).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
        std::future::pending::<()>().await;
    };
    let send = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        let mut free_at = Instant::now();
        loop {
            let read = match from.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => read,
            };
            let _ = mode.wait_for(|mode| *mode == Mode::Up).await;
            let now = Instant::now();
            let departs = match link.bytes_per_sec {
                Some(rate) => {
                    // A few milliseconds of credit, so that timer granularity (a sleep
                    // ends on the next millisecond) does not lower the rate.
                    let start = free_at.max(now.checked_sub(PACING_CREDIT).unwrap_or(now));
                    free_at = start + Duration::from_secs_f64(read as f64 / rate as f64);
                    free_at
                }
                None => now,
            };
            tokio::time::sleep_until(departs.into()).await;
            if sender
                .send((departs + link.one_way, buffer[..read].to_vec()))
                .await
                .is_err()
            {
                return;
            }
        }
    };
    tokio::join!(send, deliver);
}

/// How far behind its schedule a paced connection may fall before the schedule restarts.
const PACING_CREDIT: Duration = Duration::from_millis(5);

/// Returns when the proxy is cut, which drops both directions and closes the sockets.
async fn cut(mut mode: watch::Receiver<Mode>) {
    if mode.wait_for(|mode| *mode == Mode::Cut).await.is_err() {
        std::future::pending::<()>().await;
    }
}
