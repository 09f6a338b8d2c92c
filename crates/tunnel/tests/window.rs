//! Receive windows that grow with the path: two sessions joined by a simulated path with a
//! fixed delay each way and a fixed rate, stepped by hand.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use sssonector_tunnel::proto::{Event, Mode, Role, Session, SessionConfig};

/// One direction of the path: what was written, and the step it arrives.
#[derive(Default)]
struct Wire(VecDeque<(u32, BytesMut)>);

impl Wire {
    fn send(&mut self, at: u32, bytes: BytesMut) {
        if !bytes.is_empty() {
            self.0.push_back((at, bytes));
        }
    }

    fn deliver(&mut self, step: u32, to: &mut Session, now: Instant) {
        while self.0.front().is_some_and(|(at, _)| *at <= step) {
            let (_, bytes) = self.0.pop_front().expect("checked");
            to.receive(&bytes, now);
        }
    }
}

struct Path {
    client: Session,
    server: Session,
    /// Steps each way.
    delay: u32,
    /// Bytes the client may send per step on each stream.
    rate: usize,
    /// Whether the server's application reads what arrives.
    reads: bool,
    streams: Vec<u32>,
}

/// What a run delivered to the server's application on each stream.
struct Delivered {
    /// Over the last quarter of the steps, per stream.
    late: Vec<usize>,
}

impl Path {
    fn new(config: impl Fn(Role) -> SessionConfig, delay: u32, rate: usize) -> Self {
        let now = Instant::now();
        let mut client = Session::client(config(Role::Client), now, vec![]);
        let mut server = Session::server(config(Role::Server), now, Box::new(|_| Ok(vec![])));
        for _ in 0..4 {
            let out = client.take_output(now);
            server.receive(&out, now);
            let out = server.take_output(now);
            client.receive(&out, now);
        }
        while client.poll_event().is_some() {}
        while server.poll_event().is_some() {}
        Self {
            client,
            server,
            delay,
            rate,
            reads: true,
            streams: Vec::new(),
        }
    }

    fn open(&mut self, count: usize) {
        for _ in 0..count {
            let id = self.client.open_stream("bulk").expect("established");
            self.streams.push(id);
        }
    }

    fn run(&mut self, steps: u32) -> Delivered {
        let start = Instant::now();
        let data = Bytes::from(vec![0x5a; self.rate]);
        let (mut up, mut down) = (Wire::default(), Wire::default());
        let mut late = vec![0; self.streams.len()];
        for step in 0..steps {
            // Step by step of 1 ms, under the keepalive interval in all.
            let now = start + Duration::from_millis(u64::from(step));
            for &id in &self.streams {
                self.client.send_stream(id, &data).expect("open");
            }
            up.send(step + self.delay, self.client.take_output(now));
            up.deliver(step, &mut self.server, now);
            while let Some(event) = self.server.poll_event() {
                if let Event::StreamData { id, data } = event {
                    if self.reads {
                        self.server.consumed(id, data.len());
                    }
                    if step >= steps - steps / 4 {
                        let at = self.streams.iter().position(|s| *s == id).expect("ours");
                        late[at] += data.len();
                    }
                }
            }
            down.send(step + self.delay, self.server.take_output(now));
            down.deliver(step, &mut self.client, now);
            while self.client.poll_event().is_some() {}
        }
        Delivered { late }
    }

    fn window(&self, stream: usize) -> u64 {
        self.server
            .stream_window(self.streams[stream])
            .expect("open")
    }
}

fn config(first: u32, max: u32, budget: u64) -> impl Fn(Role) -> SessionConfig {
    move |role| {
        let mut c = SessionConfig::new(role, Mode::Forward);
        c.stream_window = first;
        c.max_stream_window = max;
        c.receive_budget = budget;
        c
    }
}

// A path of 20 steps each way (a 40-step round trip) and 4 KiB a step: 160 KiB in flight
// keeps it full, twenty times an 8 KiB window.
const DELAY: u32 = 20;
const RATE: usize = 4096;
const STEPS: u32 = 2000;

#[test]
fn a_window_smaller_than_the_path_grows_until_the_path_is_full() {
    let mut path = Path::new(config(8192, 1 << 20, 1 << 22), DELAY, RATE);
    path.open(1);
    let delivered = path.run(STEPS);
    let full = RATE * (STEPS / 4) as usize;
    assert!(
        delivered.late[0] * 10 >= full * 9,
        "late in the run the stream carries the path's rate: {} of {full}",
        delivered.late[0]
    );
    let bdp = (RATE * 2 * DELAY as usize) as u64;
    let window = path.window(0);
    assert!(
        (bdp..=4 * bdp).contains(&window),
        "the window settles between one and four round trips' worth: {window}, path {bdp}"
    );
}

#[test]
fn a_window_fixed_by_configuration_stays_and_limits_the_stream() {
    let mut path = Path::new(config(8192, 8192, 1 << 22), DELAY, RATE);
    path.open(1);
    let delivered = path.run(STEPS);
    assert_eq!(path.window(0), 8192);
    // One window per round trip, at most.
    let most = 8192 * (STEPS / 4 / (2 * DELAY) + 1) as usize;
    assert!(delivered.late[0] <= most, "{} > {most}", delivered.late[0]);
}

#[test]
fn growth_stops_at_the_session_budget() {
    let budget = 100_000;
    let mut path = Path::new(config(8192, 1 << 20, budget), DELAY, RATE);
    path.open(3);
    path.run(STEPS);
    let grown: u64 = (0..3).map(|s| path.window(s) - 8192).sum();
    assert!(grown <= budget, "grew by {grown}, budget {budget}");
    assert!(grown > 0, "it grew within the budget");
}

#[test]
fn a_window_the_path_does_not_fill_stays_as_it_is() {
    // 256 bytes a step over a 40-step round trip: 10 KiB in flight, under two thirds of 32 KiB.
    let mut path = Path::new(config(32_768, 1 << 20, 1 << 22), DELAY, 256);
    path.open(1);
    path.run(STEPS);
    assert_eq!(path.window(0), 32_768);
}

#[test]
fn an_application_that_does_not_read_gets_no_larger_window() {
    let mut path = Path::new(config(8192, 1 << 20, 1 << 22), DELAY, RATE);
    path.reads = false;
    path.open(1);
    path.run(STEPS);
    assert_eq!(path.window(0), 8192);
}
