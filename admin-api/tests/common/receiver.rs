//! A webhook receiver for tests: a real HTTP server on 127.0.0.1 (its own thread and
//! runtime) that records every delivery and answers as the test tells it to.

// Shared by two test binaries, each using a part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use tokio::sync::{Notify, oneshot};

/// One request as received.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// Headers, lower-case names.
    pub headers: HashMap<String, String>,
    /// The raw body.
    pub body: Vec<u8>,
}

impl Delivery {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("deliveries are JSON")
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
}

/// How the receiver answers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// 200, recorded.
    Accept,
    /// This status, recorded as an attempt but not kept as a delivery.
    Fail(u16),
    /// Holds each request open until [`Receiver::release`].
    Hold,
}

#[derive(Default)]
struct Log {
    accepted: Vec<Delivery>,
    attempts: usize,
    held: usize,
}

struct Shared {
    log: Mutex<Log>,
    changed: Condvar,
    mode: Mutex<Mode>,
    release: Notify,
}

/// A running receiver; stops when dropped.
pub struct Receiver {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

async fn receive(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mode = *shared.mode.lock().unwrap();
    let delivery = Delivery {
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: body.to_vec(),
    };
    let answer = match mode {
        Mode::Accept => StatusCode::OK,
        Mode::Fail(code) => StatusCode::from_u16(code).unwrap(),
        Mode::Hold => {
            let released = shared.release.notified();
            {
                let mut log = shared.log.lock().unwrap();
                log.held += 1;
                shared.changed.notify_all();
            }
            released.await;
            StatusCode::OK
        }
    };
    let mut log = shared.log.lock().unwrap();
    log.attempts += 1;
    if answer.is_success() {
        log.accepted.push(delivery);
    }
    shared.changed.notify_all();
    answer
}

/// A port held for a receiver that is not up yet.
///
/// A socket is bound to it but does not listen: connections to the port are refused
/// for certain, and no other socket (another test's, say) can take the port meanwhile,
/// since it is bound without `SO_REUSEADDR`. [`Receiver::start_on`] brings the
/// receiver up by listening on this same socket, so there is no moment when the port
/// is free. (A port that was merely free a moment ago guarantees neither.)
pub struct Reserved {
    socket: tokio::net::TcpSocket,
    /// The reserved address.
    pub addr: SocketAddr,
}

impl Reserved {
    /// The URL deliveries will go to once a receiver is up on this port.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }
}

impl Receiver {
    /// Starts on a free port.
    pub fn start() -> Receiver {
        Receiver::start_on(Receiver::reserve())
    }

    /// Reserves a port on 127.0.0.1, chosen by the system, for a receiver that is down
    /// until [`Receiver::start_on`].
    pub fn reserve() -> Reserved {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(([127, 0, 0, 1], 0).into()).unwrap();
        let addr = socket.local_addr().unwrap();
        Reserved { socket, addr }
    }

    /// Starts on a reserved port, which refused connections until now. Returns once
    /// the port accepts them.
    pub fn start_on(reserved: Reserved) -> Receiver {
        let shared = Arc::new(Shared {
            log: Mutex::default(),
            changed: Condvar::new(),
            mode: Mutex::new(Mode::Accept),
            release: Notify::new(),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready, listening) = std::sync::mpsc::channel();
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(shared.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                // Inside the runtime: the listener registers with its reactor.
                let listener = reserved
                    .socket
                    .listen(1024)
                    .expect("the reserved socket listens");
                ready.send(()).unwrap();
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        listening
            .recv()
            .expect("the receiver's thread started listening");
        Receiver {
            addr: reserved.addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The URL deliveries go to.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Changes how later requests are answered.
    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    /// Answers held requests (and later ones) with 200.
    pub fn release(&self) {
        self.set_mode(Mode::Accept);
        self.shared.release.notify_waiters();
    }

    /// Deliveries accepted so far, in arrival order.
    pub fn accepted(&self) -> Vec<Delivery> {
        self.shared.log.lock().unwrap().accepted.clone()
    }

    /// Requests answered so far, accepted or not.
    pub fn attempts(&self) -> usize {
        self.shared.log.lock().unwrap().attempts
    }

    /// Waits (at most `timeout`) until `cond` holds for (accepted, attempts, held).
    pub fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        cond: impl Fn(usize, usize, usize) -> bool,
    ) {
        let log = self.shared.log.lock().unwrap();
        let (log, result) = self
            .shared
            .changed
            .wait_timeout_while(log, timeout, |l| {
                !cond(l.accepted.len(), l.attempts, l.held)
            })
            .unwrap();
        assert!(
            !result.timed_out(),
            "timed out waiting for {what}: {} accepted, {} attempts, {} held",
            log.accepted.len(),
            log.attempts,
            log.held
        );
    }

    /// Waits until at least `n` deliveries are accepted and returns those so far. What
    /// arrives later (a duplicate, say) only [`Receiver::shut_down`] shows.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Delivery> {
        self.wait_until(timeout, &format!("{n} deliveries"), |a, _, _| a >= n);
        self.accepted()
    }

    /// Stops the receiver, letting requests it is answering finish, and returns every
    /// delivery it accepted. Once the sender has stopped too, nothing can arrive later:
    /// this is the whole record, duplicates included.
    pub fn shut_down(mut self) -> Vec<Delivery> {
        self.halt();
        self.accepted()
    }

    fn halt(&mut self) {
        // Let held requests finish so the server can stop.
        self.release();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.halt();
    }
}
