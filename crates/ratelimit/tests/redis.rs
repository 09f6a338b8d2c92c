//! The Redis-backed limiter and blocklist against a real `redis-server` that each test starts
//! on loopback.
//!
//! `cargo xtask ci` installs redis-server when it is missing (as root); elsewhere these tests
//! print why they skip.
#![cfg(feature = "redis")]

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sssonector_ratelimit::{
    FailurePolicy, Quota, RedisBlocklist, RedisLimiter, RedisStore, StoreError, Strike,
};

/// A redis-server child on a free loopback port, killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    fn start() -> Option<Server> {
        Self::start_with(free_port(), &[])
    }

    fn start_with(port: u16, extra: &[&str]) -> Option<Server> {
        let port_text = port.to_string();
        let mut args = vec![
            "--port",
            &port_text,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ];
        args.extend_from_slice(extra);
        let child = match Command::new("redis-server")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                eprintln!(
                    "skipping: cannot start redis-server ({e}); `cargo xtask ci` installs it"
                );
                return None;
            }
        };
        // With TLS only, the plain port is 0 and the TLS port is the one to wait for.
        let listening = extra
            .iter()
            .position(|a| *a == "--tls-port")
            .map_or(port, |i| extra[i + 1].parse().unwrap());
        let addr: SocketAddr = ([127, 0, 0, 1], listening).into();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Server { child, addr })
    }

    fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Runs redis-cli against this server.
    fn cli(&self, args: &[&str]) {
        let status = Command::new("redis-cli")
            .args(["-p", &self.addr.port().to_string()])
            .args(args)
            .stdout(Stdio::null())
            .status()
            .expect("redis-cli comes with redis-server");
        assert!(status.success(), "redis-cli {args:?}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn store(url: &str) -> RedisStore {
    RedisStore::builder(url)
        .rest_after_failure(Duration::from_millis(50))
        .build()
        .unwrap()
}

fn limiter(store: RedisStore, prefix: &str, failure: FailurePolicy) -> RedisLimiter {
    RedisLimiter::builder(store)
        .prefix(prefix.to_owned())
        // Refills one unit a minute: nothing refills while a test runs.
        .quota(Quota::per_minute(1).unwrap().with_burst(5).unwrap())
        .on_failure(failure)
        .build()
        .unwrap()
}

#[tokio::test]
async fn two_servers_share_one_limit_per_key() {
    let Some(redis) = Server::start() else { return };
    let a = limiter(store(&redis.url()), "shared", FailurePolicy::Open);
    let b = limiter(store(&redis.url()), "shared", FailurePolicy::Open);
    let mut admitted = 0;
    for i in 0..10 {
        let l = if i % 2 == 0 { &a } else { &b };
        if l.check_key("tenant-1").await.is_ok() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 5, "the burst is shared across both limiters");
    let refused = a.check_key("tenant-1").await.unwrap_err();
    assert!(refused.retry_after > Duration::from_secs(50), "{refused:?}");
    assert_eq!(refused.remaining, 0);
    // Another key has its own limit; another prefix is another limit.
    assert_eq!(a.check_key("tenant-2").await.unwrap().remaining(), 4);
    let other = limiter(store(&redis.url()), "other", FailurePolicy::Open);
    assert!(other.check_key("tenant-1").await.is_ok());
}

#[tokio::test]
async fn weighted_costs_and_capacity() {
    let Some(redis) = Server::start() else { return };
    let l = limiter(store(&redis.url()), "weighted", FailurePolicy::Open);
    assert_eq!(l.check_key_n("k", 3).await.unwrap().remaining(), 2);
    assert!(l.check_key_n("k", 3).await.is_err());
    assert!(
        l.check_key_n("k", 6).await.is_err(),
        "more than the burst is never admitted"
    );
    assert_eq!(l.check_key_n("k", 2).await.unwrap().remaining(), 0);
}

#[tokio::test]
async fn a_late_reply_is_never_read_as_the_next_checks_verdict() {
    let Some(redis) = Server::start() else { return };
    let closed = FailurePolicy::Closed(Duration::from_secs(7));
    let l = limiter(store(&redis.url()), "late", closed);
    // "spent" has nothing left; "fresh" has its whole burst.
    for _ in 0..5 {
        l.check_key("spent").await.unwrap();
    }
    // Redis holds every write for 400 ms: the next check gives up after its 100 ms...
    redis.cli(&["CLIENT", "PAUSE", "400", "WRITE"]);
    let gave_up = l.check_key("spent").await.unwrap_err();
    assert_eq!(
        gave_up.retry_after,
        Duration::from_secs(7),
        "the failure policy"
    );
    // ...and its verdict (refused) arrives later, on the connection the next check uses.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut fresh = None;
    for _ in 0..40 {
        match l.check_key("fresh").await {
            Ok(admitted) => {
                fresh = Some(admitted.remaining());
                break;
            }
            // Still resting after the timeout.
            Err(e) if e.retry_after == Duration::from_secs(7) => {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Err(e) => panic!("the late verdict for `spent` was taken as `fresh`'s: {e:?}"),
        }
    }
    assert_eq!(fresh, Some(4), "`fresh` gets its own verdict");
    assert_eq!(l.check_key("fresh").await.unwrap().remaining(), 3);
}

#[tokio::test]
async fn fails_open_or_closed_when_redis_is_gone_and_recovers() {
    let Some(redis) = Server::start() else { return };
    let addr = redis.addr;
    let open = limiter(store(&redis.url()), "f", FailurePolicy::Open);
    let closed = limiter(
        store(&redis.url()),
        "f",
        FailurePolicy::Closed(Duration::from_secs(2)),
    );
    assert!(open.check_key("k").await.is_ok());
    assert!(closed.check_key("k").await.is_ok());
    drop(redis);

    for _ in 0..3 {
        let start = Instant::now();
        assert!(open.check_key("k").await.is_ok(), "fail open admits");
        let refused = closed.check_key("k").await.unwrap_err();
        assert_eq!(
            refused.retry_after,
            Duration::from_secs(2),
            "fail closed refuses"
        );
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }

    // A new Redis on the same address: the limiters reconnect by themselves.
    let Some(_again) = Server::start_with(addr.port(), &[]) else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // Fail open admits with nothing counted (0 left) until Redis answers again.
        let admitted = open.check_key("k").await.unwrap();
        if admitted.remaining() > 0 {
            assert_eq!(
                admitted.remaining(),
                4,
                "state starts over on an empty Redis"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no reconnect to the restarted Redis"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_silent_server_hits_the_timeout_and_the_failure_policy() {
    // Accepts connections and never answers: the check must not hang.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let store = RedisStore::builder(format!("redis://{addr}"))
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let closed = RedisLimiter::builder(store)
        .quota(Quota::per_second(10).unwrap())
        .on_failure(FailurePolicy::Closed(Duration::from_secs(1)))
        .build()
        .unwrap();
    let start = Instant::now();
    let refused = closed.check_key("k").await.unwrap_err();
    assert_eq!(refused.retry_after, Duration::from_secs(1));
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    keep.abort();
}

#[tokio::test]
async fn passwords_acl_users_databases_and_host_names() {
    let port = free_port();
    let Some(redis) = Server::start_with(
        port,
        &[
            "--requirepass",
            "s3cret",
            "--user",
            "limits",
            "on",
            ">limits-pw",
            "~lim:*",
            "&*",
            "+@all",
        ],
    ) else {
        return;
    };
    // No password: refused, and the failure policy decides.
    let anonymous = limiter(
        store(&redis.url()),
        "lim",
        FailurePolicy::Closed(Duration::from_secs(3)),
    );
    assert_eq!(
        anonymous.check_key("k").await.unwrap_err().retry_after,
        Duration::from_secs(3)
    );
    // The default user's password, by URL, by a host name, in database 1.
    let by_url = limiter(
        store(&format!("redis://:s3cret@localhost:{port}/1")),
        "lim",
        FailurePolicy::Closed(Duration::from_secs(3)),
    );
    assert_eq!(by_url.check_key("k").await.unwrap().remaining(), 4);
    // An ACL user with its password given apart from the URL, in database 2: another
    // database is another limit.
    let acl = RedisStore::builder(format!("redis://limits@127.0.0.1:{port}/2"))
        .password("limits-pw")
        .build()
        .unwrap();
    assert_eq!(acl.name(), format!("redis://limits:***@127.0.0.1:{port}/2"));
    let by_user = limiter(acl, "lim", FailurePolicy::Closed(Duration::from_secs(3)));
    assert_eq!(by_user.check_key("k").await.unwrap().remaining(), 4);
    assert_eq!(by_url.check_key("k").await.unwrap().remaining(), 3);
    // A wrong password fails without naming it.
    let wrong = RedisStore::builder(format!("redis://limits:nope@127.0.0.1:{port}"))
        .build()
        .unwrap();
    let blocklist = RedisBlocklist::builder(wrong)
        .prefix("lim")
        .build()
        .unwrap();
    let e = blocklist.strike("k", "test").await.unwrap_err();
    assert!(matches!(e, StoreError::Redis { .. }), "{e:?}");
    assert!(!e.to_string().contains("nope"), "{e}");
}

/// A directory of its own under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn tls_with_client_certificates() {
    use sssonector_certs::{CertificateAuthority, Validity};
    let ca = CertificateAuthority::generate("redis test CA", Validity::days(1)).unwrap();
    let server = ca
        .issue_server(&["localhost", "127.0.0.1"], Validity::days(1))
        .unwrap();
    let client = ca.issue_client("limiter", Validity::days(1)).unwrap();
    let dir = TempDir::new("sssonector-redis-tls");
    let ca_file = dir.write("ca.pem", ca.cert_pem());
    let cert_file = dir.write("server.pem", &server.cert_pem);
    let key_file = dir.write("server.key", &server.key_pem);
    let tls_port = free_port();
    let tls_port_text = tls_port.to_string();
    let Some(_redis) = Server::start_with(
        0,
        &[
            "--tls-port",
            &tls_port_text,
            "--tls-cert-file",
            &cert_file,
            "--tls-key-file",
            &key_file,
            "--tls-ca-cert-file",
            &ca_file,
            "--tls-auth-clients",
            "yes",
        ],
    ) else {
        return;
    };
    let url = format!("rediss://localhost:{tls_port}");
    let closed = FailurePolicy::Closed(Duration::from_secs(3));
    let with_identity = RedisStore::builder(url.as_str())
        .timeout(Duration::from_secs(2))
        .tls_root_certificates(ca.cert_pem().as_bytes().to_vec())
        .tls_client_identity(client.cert_pem.clone(), client.key_pem.clone())
        .build()
        .unwrap();
    let l = limiter(with_identity, "tls", closed);
    assert_eq!(l.check_key("k").await.unwrap().remaining(), 4);
    // Without a client certificate the server refuses the handshake.
    let anonymous = RedisStore::builder(url.as_str())
        .timeout(Duration::from_secs(2))
        .tls_root_certificates(ca.cert_pem().as_bytes().to_vec())
        .build()
        .unwrap();
    let l = limiter(anonymous, "tls", closed);
    assert_eq!(
        l.check_key("k").await.unwrap_err().retry_after,
        Duration::from_secs(3)
    );
}

fn blocklist(store: RedisStore) -> RedisBlocklist {
    RedisBlocklist::builder(store)
        .prefix("bans")
        .strikes(3, Duration::from_secs(60))
        .block(Duration::from_secs(60), Duration::from_secs(150))
        .build()
        .unwrap()
}

#[tokio::test]
async fn strikes_from_two_servers_earn_one_shared_escalating_block() {
    let Some(redis) = Server::start() else { return };
    let a = blocklist(store(&redis.url()));
    let b = blocklist(store(&redis.url()));
    let mut watch_b = b.watch(100);

    assert_eq!(
        a.strike("192.0.2.7", "tls").await.unwrap(),
        Strike::Counted { strikes: 1 }
    );
    assert_eq!(
        b.strike("192.0.2.7", "tls").await.unwrap(),
        Strike::Counted { strikes: 2 }
    );
    let Strike::Blocked(block) = a.strike("192.0.2.7", "policy").await.unwrap() else {
        panic!("the third strike from either server blocks");
    };
    assert_eq!((block.level, block.reason.as_str()), (1, "policy"));
    assert_eq!(block.remaining, Duration::from_secs(60));
    // The other server hears of it, and sees it when it asks.
    let heard = tokio::time::timeout(Duration::from_secs(5), watch_b.recv())
        .await
        .expect("announced")
        .unwrap();
    assert_eq!((heard.key.as_str(), heard.level), ("192.0.2.7", 1));
    assert!(matches!(
        b.strike("192.0.2.7", "tls").await.unwrap(),
        Strike::AlreadyBlocked(_)
    ));
    assert_eq!(b.blocked("192.0.2.7").await.unwrap().unwrap().level, 1);
    assert_eq!(b.blocked("192.0.2.8").await.unwrap(), None);

    // The block ends (here: taken off by hand, keeping the escalation), and the next three
    // strikes earn a block twice as long; the third is capped at the longest.
    redis.cli(&["DEL", "bans:block:192.0.2.7"]);
    for expected in [Duration::from_secs(120), Duration::from_secs(150)] {
        let mut outcome = Strike::Counted { strikes: 0 };
        for _ in 0..3 {
            outcome = b.strike("192.0.2.7", "tls").await.unwrap();
        }
        let Strike::Blocked(block) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(block.remaining, expected);
        redis.cli(&["DEL", "bans:block:192.0.2.7"]);
    }

    // A watcher that starts late first reads the blocks already in force.
    for key in ["2001:db8:1:2::", "198.51.100.1"] {
        for _ in 0..3 {
            a.strike(key, "tls").await.unwrap();
        }
    }
    let mut late = a.watch(100);
    let mut caught_up = Vec::new();
    for _ in 0..2 {
        let block = tokio::time::timeout(Duration::from_secs(5), late.recv())
            .await
            .expect("caught up")
            .unwrap();
        caught_up.push(block.key);
    }
    caught_up.sort();
    assert_eq!(caught_up, ["198.51.100.1", "2001:db8:1:2::"]);
    assert_eq!(a.list(10).await.unwrap().len(), 2);
    assert!(a.unblock("198.51.100.1").await.unwrap());
    assert_eq!(a.list(10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_watch_resubscribes_after_redis_restarts() {
    let Some(redis) = Server::start() else { return };
    let port = redis.addr.port();
    let url = redis.url();
    let list = blocklist(store(&url));
    let mut watch = list.watch(100);
    // Subscribed once the first announcement gets through.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut key = 0;
    let announced = loop {
        key += 1;
        let name = format!("first-{key}");
        for _ in 0..3 {
            list.strike(&name, "tls").await.unwrap();
        }
        if let Ok(Some(block)) =
            tokio::time::timeout(Duration::from_millis(200), watch.recv()).await
        {
            break block;
        }
        assert!(Instant::now() < deadline, "no announcement arrived");
    };
    assert!(announced.key.starts_with("first-"));
    drop(redis);
    let Some(_again) = Server::start_with(port, &[]) else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Strike::Blocked(_)) = async {
            list.strike("second", "tls").await?;
            list.strike("second", "tls").await?;
            list.strike("second", "tls").await
        }
        .await
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no reconnect to the restarted Redis"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let heard = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let block = watch.recv().await.unwrap();
            if block.key == "second" {
                return block;
            }
        }
    })
    .await
    .expect("the watch resubscribed (or caught up) after the restart");
    assert_eq!(heard.level, 1);
}

#[tokio::test]
async fn a_blocklist_needs_only_its_keys_channel_and_commands() {
    let port = free_port();
    let Some(_redis) = Server::start_with(
        port,
        &[
            "--user",
            "bans",
            "on",
            ">pw",
            "resetchannels",
            "~edge:bans:*",
            "&edge:bans:*",
            "-@all",
            "+evalsha",
            "+eval",
            "+script|load",
            "+get",
            "+pttl",
            "+scan",
            "+del",
            "+publish",
            "+subscribe",
            "+time",
            "+rpush",
            "+ltrim",
            "+lrange",
            "+pexpire",
            "+incr",
            "+set",
            "+ping",
        ],
    ) else {
        return;
    };
    let store = RedisStore::builder(format!("redis://bans:pw@127.0.0.1:{port}"))
        .build()
        .unwrap();
    let list = RedisBlocklist::builder(store)
        .prefix("edge:bans")
        .strikes(2, Duration::from_secs(60))
        .build()
        .unwrap();
    let mut watch = list.watch(10);
    // The watch is subscribed once an announcement gets through.
    let deadline = Instant::now() + Duration::from_secs(5);
    for n in 0.. {
        let key = format!("k{n}");
        list.strike(&key, "tls").await.unwrap();
        assert!(matches!(
            list.strike(&key, "tls").await.unwrap(),
            Strike::Blocked(_)
        ));
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), watch.recv()).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no announcement reached the watch"
        );
    }
    assert!(list.blocked("k0").await.unwrap().is_some());
    assert!(!list.list(10).await.unwrap().is_empty());
    assert!(list.unblock("k0").await.unwrap());
}
