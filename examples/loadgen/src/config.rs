//! What a run is: its mode, target, bodies, duration and budget.

use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, Uri};

use crate::payload::{Payload, Payloads};

/// How requests are issued.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// `concurrency` clients, each waiting for its answer before sending
    /// again; latency from the actual send.
    Closed {
        /// Number of clients (at least 1).
        concurrency: usize,
    },
    /// Poisson arrivals at `rate` per second from `seed`; latency from the
    /// intended send time; arrivals beyond `max_outstanding` in flight are
    /// dropped (counted as [`DROPPED`](crate::DROPPED) errors).
    Open {
        /// Mean arrivals per second.
        rate: f64,
        /// Most requests in flight (at least 1).
        max_outstanding: usize,
        /// Seed of the arrival schedule.
        seed: u64,
    },
}

/// One load run: where, what, how hard, for how long.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub(crate) uri: Uri,
    pub(crate) method: Method,
    pub(crate) payloads: Payloads,
    pub(crate) mode: Mode,
    pub(crate) duration: Duration,
    pub(crate) max_requests: Option<u64>,
    pub(crate) request_timeout: Duration,
    pub(crate) progress: bool,
}

impl LoadConfig {
    /// A `GET` run against `uri` with 1 closed-loop client for 5 s, no
    /// request cap, a 30 s timeout per request and no progress bar.
    pub fn new(uri: Uri) -> Self {
        Self {
            uri,
            method: Method::GET,
            payloads: Payloads::none(),
            mode: Mode::Closed { concurrency: 1 },
            duration: Duration::from_secs(5),
            max_requests: None,
            request_timeout: Duration::from_secs(30),
            progress: false,
        }
    }

    /// Sends `body` as a JSON `POST` on every request.
    pub fn json_body(self, body: impl Into<Bytes>) -> Self {
        self.payloads(Payloads::single(Payload::json(body)))
    }

    /// `POST`s these bodies in turn.
    pub fn payloads(mut self, payloads: Payloads) -> Self {
        self.method = Method::POST;
        self.payloads = payloads;
        self
    }

    /// Closed loop with this many clients (at least 1).
    pub fn concurrency(mut self, clients: usize) -> Self {
        self.mode = Mode::Closed {
            concurrency: clients.max(1),
        };
        self
    }

    /// Open loop: Poisson arrivals at `rate` per second, at most 1024 in
    /// flight, seed 1 (see [`Self::max_outstanding`], [`Self::seed`]).
    pub fn open_loop(mut self, rate: f64) -> Self {
        self.mode = Mode::Open {
            rate,
            max_outstanding: 1024,
            seed: 1,
        };
        self
    }

    /// Most requests in flight in an open loop (at least 1); no effect on
    /// a closed loop.
    pub fn max_outstanding(mut self, max: usize) -> Self {
        if let Mode::Open {
            max_outstanding, ..
        } = &mut self.mode
        {
            *max_outstanding = max.max(1);
        }
        self
    }

    /// Seed of an open loop's arrival schedule; no effect on a closed loop.
    pub fn seed(mut self, value: u64) -> Self {
        if let Mode::Open { seed, .. } = &mut self.mode {
            *seed = value;
        }
        self
    }

    /// How long new requests are sent.
    pub fn duration(mut self, duration: Duration) -> Self {
        self.duration = duration;
        self
    }

    /// The most requests the run sends in all (it may stop earlier, on time).
    pub fn max_requests(mut self, max: u64) -> Self {
        self.max_requests = Some(max);
        self
    }

    /// How long one request may take before it counts as a `timeout` error.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Draws a progress bar on stderr while running (when it is a terminal).
    pub fn progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }

    /// The target URI.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The request timeout.
    pub fn timeout(&self) -> Duration {
        self.request_timeout
    }

    pub(crate) fn clients(&self) -> usize {
        match self.mode {
            Mode::Closed { concurrency } => concurrency,
            Mode::Open {
                max_outstanding, ..
            } => max_outstanding,
        }
    }
}
