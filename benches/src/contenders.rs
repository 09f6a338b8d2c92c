//! Every contender, built once here so the criterion benchmarks and the instruction counter
//! measure exactly the same stacks.
//!
//! Each wraps the same inner service: an immediately ready `service_fn` echoing a `u64`.

use bytes::{BufMut, BytesMut};
use std::future::{Ready, ready};
use std::io;
use std::time::Duration;

use sssonector_breaker::{CircuitBreaker, CircuitBreakerLayer, Window};
use sssonector_retry::{RetryLayer, RetryPolicy};
use tower::{Layer, Service, service_fn};

/// The inner service every contender wraps.
pub fn bare()
-> impl Service<u64, Response = u64, Error = io::Error, Future = Ready<io::Result<u64>>>
+ Clone
+ Send
+ 'static {
    service_fn(|x: u64| ready(Ok::<_, io::Error>(x)))
}

/// A minimal attempts-limited policy for `tower::retry`, as its documentation shows.
#[derive(Clone, Debug)]
pub struct Attempts(pub usize);

impl tower::retry::Policy<u64, u64, io::Error> for Attempts {
    type Future = Ready<()>;

    fn retry(
        &mut self,
        _req: &mut u64,
        result: &mut Result<u64, io::Error>,
    ) -> Option<Self::Future> {
        match result {
            Ok(_) => None,
            Err(_) if self.0 > 0 => {
                self.0 -= 1;
                Some(ready(()))
            }
            Err(_) => None,
        }
    }

    fn clone_request(&mut self, req: &u64) -> Option<u64> {
        Some(*req)
    }
}

/// Our retry layer with the default policy (3 retries, exponential backoff).
pub fn retry_ours() -> impl Service<u64, Response = u64, Error: std::fmt::Debug> {
    RetryLayer::new(RetryPolicy::default()).layer(bare())
}

/// Our retry layer with a named policy, which records metrics and so shares state per call.
pub fn retry_ours_named() -> impl Service<u64, Response = u64, Error: std::fmt::Debug> {
    let policy = RetryPolicy::builder()
        .name("bench")
        .build()
        .expect("valid policy");
    RetryLayer::new(policy).layer(bare())
}

/// `tower::retry` with an attempts-limited policy.
pub fn retry_tower() -> impl Service<u64, Response = u64, Error: std::fmt::Debug> {
    tower::retry::RetryLayer::new(Attempts(3)).layer(bare())
}

/// tower-resilience's retry with 4 attempts and exponential backoff.
pub fn retry_tower_resilience() -> impl Service<u64, Response = u64, Error: std::fmt::Debug> {
    tower_resilience::retry::RetryLayer::<u64, u64, io::Error>::builder()
        .max_attempts(4)
        .exponential_backoff(Duration::from_millis(100))
        .build()
        .layer(bare())
}

/// Our breaker tripping on 5 consecutive failures (the default).
pub fn breaker_ours() -> impl Service<u64, Response = u64, Error: std::fmt::Debug> {
    let breaker = CircuitBreaker::builder()
        .consecutive_failures(5)
        .build()
        .expect("valid breaker");
    CircuitBreakerLayer::new(breaker).layer(bare())
}

/// tower-resilience's breaker tripping on 5 consecutive failures.
pub fn breaker_tower_resilience() -> impl Service<u64, Response = u64, Error: std::fmt::Debug> {
    tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .consecutive_failures(5)
        .build()
        .expect("valid breaker")
        .layer(bare())
}

/// Our breaker tripping on a 50 % failure rate over the last 100 calls.
pub fn breaker_ours_rate() -> impl Service<u64, Response = u64, Error: std::fmt::Debug> {
    let breaker = CircuitBreaker::builder()
        .consecutive_failures(0)
        .failure_rate(0.5)
        .window(Window::Count(100))
        .build()
        .expect("valid breaker");
    CircuitBreakerLayer::new(breaker).layer(bare())
}

/// tower-resilience's breaker with a 50 % failure rate over the last 100 calls (its default).
pub fn breaker_tower_resilience_rate() -> impl Service<u64, Response = u64, Error: std::fmt::Debug>
{
    tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_size(100)
        .build()
        .expect("valid breaker")
        .layer(bare())
}

/// A quota no benchmark loop can exhaust: what is measured is the admit path.
pub const UNLIMITED_PER_SECOND: u32 = 1_000_000_000;

/// Our direct limiter.
pub fn ratelimit_ours() -> sssonector_ratelimit::RateLimiter {
    sssonector_ratelimit::RateLimiter::new(
        sssonector_ratelimit::Quota::per_second(u64::from(UNLIMITED_PER_SECOND))
            .expect("valid quota"),
    )
}

/// governor's direct limiter with its default (quanta) clock.
pub fn ratelimit_governor() -> governor::DefaultDirectRateLimiter {
    governor::RateLimiter::direct(governor::Quota::per_second(
        std::num::NonZeroU32::new(UNLIMITED_PER_SECOND).expect("non-zero"),
    ))
}

/// Our keyed limiter.
pub fn keyed_ours() -> sssonector_ratelimit::KeyedLimiter<u64> {
    sssonector_ratelimit::KeyedLimiter::builder()
        .quota(
            sssonector_ratelimit::Quota::per_second(u64::from(UNLIMITED_PER_SECOND))
                .expect("valid quota"),
        )
        .build()
        .expect("valid limiter")
}

/// governor's keyed limiter (DashMap state, quanta clock).
pub fn keyed_governor() -> governor::DefaultKeyedRateLimiter<u64> {
    governor::RateLimiter::keyed(governor::Quota::per_second(
        std::num::NonZeroU32::new(UNLIMITED_PER_SECOND).expect("non-zero"),
    ))
}

/// Our rate-limit layer (reject mode) over the bare service.
pub fn ratelimit_layer_ours() -> impl Service<u64, Response = u64, Error: std::fmt::Debug> {
    sssonector_ratelimit::RateLimitLayer::new(ratelimit_ours(), sssonector_ratelimit::Mode::Reject)
        .layer(bare())
}

/// Our rate-limit layer (wait mode) over the bare service.
pub fn ratelimit_layer_ours_wait() -> impl Service<u64, Response = u64, Error: std::fmt::Debug> {
    sssonector_ratelimit::RateLimitLayer::new(ratelimit_ours(), sssonector_ratelimit::Mode::Wait)
        .layer(bare())
}

/// `tower::limit::RateLimit` over the bare service.
pub fn ratelimit_layer_tower() -> impl Service<u64, Response = u64, Error: std::fmt::Debug> {
    tower::limit::RateLimitLayer::new(u64::from(UNLIMITED_PER_SECOND), Duration::from_secs(1))
        .layer(bare())
}

/// tower-resilience's rate limiter over the bare service.
pub fn ratelimit_layer_tower_resilience()
-> impl Service<u64, Response = u64, Error: std::fmt::Debug> {
    tower_resilience::ratelimiter::RateLimiterLayer::builder()
        .limit_for_period(UNLIMITED_PER_SECOND as usize)
        .refresh_period(Duration::from_secs(1))
        .build()
        .expect("valid rate limiter")
        .layer(bare())
}

/// The buffer size measured for pools: a TLS record.
pub const BUF: usize = 16 * 1024;

/// Our buffer pool with its default configuration (the 16 KiB class, thread caches on).
pub fn bufpool_ours() -> sssonector_bufpool::BufPool {
    sssonector_bufpool::BufPool::default()
}

/// One get, a one-byte write and a drop from our pool.
#[inline]
pub fn bufpool_ours_op(pool: &sssonector_bufpool::BufPool) -> u64 {
    let mut buf = pool.try_get(BUF).expect("the budget holds many buffers");
    buf.put_u8(1);
    buf.len() as u64
}

/// lockfree-object-pool's fastest pool (`LinearObjectPool`) of 16 KiB `BytesMut`, cleared
/// on return as ours are.
pub fn bufpool_lockfree() -> lockfree_object_pool::LinearObjectPool<BytesMut> {
    lockfree_object_pool::LinearObjectPool::new(|| BytesMut::with_capacity(BUF), BytesMut::clear)
}

/// One pull, a one-byte write and a drop from lockfree-object-pool.
#[inline]
pub fn bufpool_lockfree_op(pool: &lockfree_object_pool::LinearObjectPool<BytesMut>) -> u64 {
    let mut buf = pool.pull();
    buf.put_u8(1);
    buf.len() as u64
}

/// lockfree-object-pool's `LinearObjectPool` behind an `Arc`, for `pull_owned`: a handle that
/// is `'static` and `Send`, as ours is, so it can move into a spawned task.
pub fn bufpool_lockfree_owned() -> std::sync::Arc<lockfree_object_pool::LinearObjectPool<BytesMut>>
{
    std::sync::Arc::new(bufpool_lockfree())
}

/// One `pull_owned`, a one-byte write and a drop from lockfree-object-pool.
#[inline]
pub fn bufpool_lockfree_owned_op(
    pool: &std::sync::Arc<lockfree_object_pool::LinearObjectPool<BytesMut>>,
) -> u64 {
    let mut buf = pool.pull_owned();
    buf.put_u8(1);
    buf.len() as u64
}

/// object-pool's `Pool` of 16 KiB `BytesMut`.
pub fn bufpool_object_pool() -> object_pool::Pool<BytesMut> {
    object_pool::Pool::new(64, || BytesMut::with_capacity(BUF))
}

/// One pull, a one-byte write and a drop from object-pool (which does not clear on return,
/// so we do, as the others do).
#[inline]
pub fn bufpool_object_pool_op(pool: &object_pool::Pool<BytesMut>) -> u64 {
    let mut buf = pool.pull(|| BytesMut::with_capacity(BUF));
    buf.clear();
    buf.put_u8(1);
    buf.len() as u64
}

/// Puts glibc's allocator in the state a long-running process has it in for a 16 KiB request:
/// a free 16 KiB block held in its bins, with a live allocation after it. Without this, a
/// benchmark that allocates and frees one block in a loop in an otherwise idle heap has the
/// block merged back into the top of the heap on every free and split off again on every
/// allocation, malloc's cheapest path (about half the cost). Keep the value alive while
/// measuring; it holds the live allocation.
pub fn heap_in_use() -> Vec<u8> {
    let block = BytesMut::with_capacity(BUF);
    let after = vec![1u8; 64];
    drop(block);
    after
}

/// A fresh allocation, a one-byte write and a free: what a pool saves.
#[inline]
pub fn bufpool_fresh_op() -> u64 {
    let mut buf = BytesMut::with_capacity(BUF);
    buf.put_u8(1);
    buf.len() as u64
}

/// Connection pools: managers for ours, deadpool and bb8 that hand out plain numbers, with an
/// optional fault (every tenth connection comes back broken), and a runner that spreads
/// get-and-return cycles over tasks.
pub mod connpool {
    use std::io;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    /// The pool size measured.
    pub const POOL: usize = 8;

    /// Every tenth return is broken when `faults` is on.
    #[derive(Debug, Default)]
    pub struct Faults {
        on: bool,
        returns: AtomicU64,
    }

    impl Faults {
        fn broken(&self) -> bool {
            self.on && self.returns.fetch_add(1, Ordering::Relaxed) % 10 == 9
        }
    }

    /// Our manager.
    #[derive(Debug)]
    pub struct Ours(Faults);

    impl sssonector_connpool::Manager for Ours {
        type Endpoint = ();
        type Connection = u64;
        type Error = io::Error;

        async fn connect(&self, (): &()) -> io::Result<u64> {
            Ok(7)
        }

        async fn check(&self, _: &mut u64) -> io::Result<()> {
            Ok(())
        }

        fn is_broken(&self, _: &mut u64) -> bool {
            self.0.broken()
        }
    }

    /// deadpool's manager.
    #[derive(Debug)]
    pub struct Dead(Faults);

    impl deadpool::managed::Manager for Dead {
        type Type = u64;
        type Error = io::Error;

        async fn create(&self) -> io::Result<u64> {
            Ok(7)
        }

        async fn recycle(
            &self,
            _: &mut u64,
            _: &deadpool::managed::Metrics,
        ) -> deadpool::managed::RecycleResult<io::Error> {
            if self.0.broken() {
                return Err(deadpool::managed::RecycleError::Message("broken".into()));
            }
            Ok(())
        }
    }

    /// bb8's manager.
    #[derive(Debug)]
    pub struct Bb8(Faults);

    impl bb8::ManageConnection for Bb8 {
        type Connection = u64;
        type Error = io::Error;

        async fn connect(&self) -> io::Result<u64> {
            Ok(7)
        }

        async fn is_valid(&self, _: &mut u64) -> io::Result<()> {
            Ok(())
        }

        fn has_broken(&self, _: &mut u64) -> bool {
            self.0.broken()
        }
    }

    /// Runs `iters` get-and-return cycles spread over `tasks` tasks and returns the wall time.
    pub fn run<F, Fut>(rt: &tokio::runtime::Runtime, tasks: u64, iters: u64, cycle: F) -> Duration
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let cycle = Arc::new(cycle);
        let per_task = iters.div_ceil(tasks);
        rt.block_on(async move {
            let start = Instant::now();
            let handles: Vec<_> = (0..tasks)
                .map(|_| {
                    let cycle = Arc::clone(&cycle);
                    tokio::spawn(async move {
                        for _ in 0..per_task {
                            cycle().await;
                        }
                    })
                })
                .collect();
            for h in handles {
                h.await.expect("benchmark task");
            }
            start.elapsed()
        })
    }

    fn faults(on: bool) -> Faults {
        Faults {
            on,
            ..Faults::default()
        }
    }

    /// A two-worker runtime, as on the CI machine's two cores.
    pub fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    }

    /// Our pool of `POOL`.
    pub fn ours(faulty: bool) -> sssonector_connpool::Pool<Ours> {
        sssonector_connpool::Pool::builder(Ours(faults(faulty)))
            .endpoint(())
            .max_size(POOL)
            .build()
            .expect("pool")
    }

    /// deadpool's pool of `POOL`.
    pub fn deadpool(faulty: bool) -> deadpool::managed::Pool<Dead> {
        deadpool::managed::Pool::builder(Dead(faults(faulty)))
            .max_size(POOL)
            .build()
            .expect("pool")
    }

    /// bb8's pool of `POOL`, without a test on checkout (as ours and deadpool's here).
    pub async fn bb8(faulty: bool) -> bb8::Pool<Bb8> {
        bb8::Pool::builder()
            .max_size(u32::try_from(POOL).expect("small"))
            .test_on_check_out(false)
            .build(Bb8(faults(faulty)))
            .await
            .expect("pool")
    }
}

/// TLS: full TLS 1.3 mutual-TLS handshakes over an in-memory pipe, with a server whose
/// certificate and client verifier are static or reloadable.
pub mod tls {
    use std::sync::Arc;

    use rustls_pki_types::ServerName;
    use sssonector_certs::{
        CertificateAuthority, Identity, ReloadableIdentity, ReloadableTrust, TlsOptions,
        TrustStore, Usage, Validity, client_config, server_config,
        server_config_reloading_identity_and_trust,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server configuration of each kind and a client (session resumption off, so every
    /// handshake is a full one).
    #[derive(Debug)]
    pub struct Setup {
        /// `server_config`: fixed certificate and verifier.
        pub fixed: Arc<rustls::ServerConfig>,
        /// `server_config_reloading_identity_and_trust`: both reloadable.
        pub reloadable: Arc<rustls::ServerConfig>,
        /// The client.
        pub client: Arc<rustls::ClientConfig>,
        _dir: TempDir,
    }

    /// A directory removed on drop.
    #[derive(Debug)]
    struct TempDir(std::path::PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Generates the PKI, writes the reloadable side's files, builds the configurations.
    pub fn setup() -> Setup {
        let dir = std::env::temp_dir().join(format!("sssonector-bench-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let ca = CertificateAuthority::generate("bench CA", Validity::days(2)).expect("CA");
        let server = ca
            .issue_server(&["localhost"], Validity::days(1))
            .expect("server");
        let client = ca
            .issue_client("client", Validity::days(1))
            .expect("client");
        let crl = ca.crl(std::time::Duration::from_secs(86_400)).expect("CRL");
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write");
            path
        };
        let (cert, key) = (
            write("server.pem", &server.cert_pem),
            write("server.key", &server.key_pem),
        );
        let (ca_file, crl_file) = (write("ca.pem", ca.cert_pem()), write("ca.crl", &crl));
        let trust = TrustStore::from_pem(ca.cert_pem(), &[&crl]).expect("trust");
        let options = TlsOptions::new();
        let fixed = server_config(
            &Identity::from_pem(&server.cert_pem, &server.key_pem).expect("identity"),
            &trust,
            &options,
        )
        .expect("server config");
        let identity = Arc::new(
            ReloadableIdentity::load("bench", &cert, &key, Usage::Server, None).expect("identity"),
        );
        let reloadable_trust =
            Arc::new(ReloadableTrust::load("bench", &ca_file, &[&crl_file]).expect("trust"));
        let reloadable =
            server_config_reloading_identity_and_trust(identity, &reloadable_trust, &options)
                .expect("server config");
        let mut client = (*client_config(
            &Identity::from_pem(&client.cert_pem, &client.key_pem).expect("identity"),
            &trust,
            &options,
        )
        .expect("client config"))
        .clone();
        client.resumption = rustls::client::Resumption::disabled();
        Setup {
            fixed,
            reloadable,
            client: Arc::new(client),
            _dir: TempDir(dir),
        }
    }

    /// One full handshake and a one-byte exchange over an in-memory pipe.
    pub async fn handshake(server: Arc<rustls::ServerConfig>, client: Arc<rustls::ClientConfig>) {
        let (a, b) = tokio::io::duplex(16 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let connector = tokio_rustls::TlsConnector::from(client);
        let server_side = async move {
            let mut tls = acceptor.accept(a).await.expect("server handshake");
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte).await.expect("read");
            tls.write_all(&byte).await.expect("write");
        };
        let client_side = async move {
            let name = ServerName::try_from("localhost").expect("name");
            let mut tls = connector.connect(name, b).await.expect("client handshake");
            tls.write_all(b"x").await.expect("write");
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte).await.expect("read");
        };
        tokio::join!(server_side, client_side);
    }
}
