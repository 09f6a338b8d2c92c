//! The Redis-backed limiter against a real `redis-server` that each test starts on loopback.
//!
//! `cargo xtask ci` installs redis-server when it is missing (as root); elsewhere these tests
//! print why they skip.
#![cfg(feature = "redis")]

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sssonector_ratelimit::{FailurePolicy, Quota, RedisLimiter};

/// A redis-server child on a free loopback port, killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start() -> Option<Server> {
        let port = TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        Self::start_on(port)
    }

    fn start_on(port: u16) -> Option<Server> {
        let child = match Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
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
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
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
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn limiter(addr: SocketAddr, prefix: &str, failure: FailurePolicy) -> RedisLimiter {
    RedisLimiter::builder(addr)
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
    let a = limiter(redis.addr, "shared", FailurePolicy::Open);
    let b = limiter(redis.addr, "shared", FailurePolicy::Open);
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
    let other = limiter(redis.addr, "other", FailurePolicy::Open);
    assert!(other.check_key("tenant-1").await.is_ok());
}

#[tokio::test]
async fn weighted_costs_and_capacity() {
    let Some(redis) = Server::start() else { return };
    let l = limiter(redis.addr, "weighted", FailurePolicy::Open);
    assert_eq!(l.check_key_n("k", 3).await.unwrap().remaining(), 2);
    assert!(l.check_key_n("k", 3).await.is_err());
    assert!(
        l.check_key_n("k", 6).await.is_err(),
        "more than the burst is never admitted"
    );
    assert_eq!(l.check_key_n("k", 2).await.unwrap().remaining(), 0);
}

#[tokio::test]
async fn fails_open_or_closed_when_redis_is_gone_and_recovers() {
    let Some(redis) = Server::start() else { return };
    let addr = redis.addr;
    let open = limiter(addr, "f", FailurePolicy::Open);
    let closed = limiter(addr, "f", FailurePolicy::Closed(Duration::from_secs(2)));
    assert!(open.check_key("k").await.is_ok());
    assert!(closed.check_key("k").await.is_ok());
    drop(redis);

    for _ in 0..3 {
        assert!(open.check_key("k").await.is_ok(), "fail open admits");
        let refused = closed.check_key("k").await.unwrap_err();
        assert_eq!(
            refused.retry_after,
            Duration::from_secs(2),
            "fail closed refuses"
        );
    }

    // A new Redis on the same address: the limiters reconnect by themselves.
    let Some(_again) = Server::start_on(addr.port()) else {
        return;
    };
    let fresh = open.check_key("k").await.unwrap();
    assert_eq!(fresh.remaining(), 4, "state starts over on an empty Redis");
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
    let closed = RedisLimiter::builder(addr)
        .quota(Quota::per_second(10).unwrap())
        .timeout(Duration::from_millis(50))
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
