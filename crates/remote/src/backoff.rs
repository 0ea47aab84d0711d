//! Faults and the backoff after them: what went wrong with a remote engine, by class, and
//! when to try it again. While an engine is failing, requests answer at once with the last
//! fault, and one request at a time probes it once the wait is over (a circuit breaker's
//! half-open state), so typing never waits on a dead engine.
//!
//! Pure: time comes in as an argument.

use std::time::{Duration, Instant};

/// The class of a fault: one message per class reaches the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// Nothing listens at the endpoint.
    Refused,
    /// The host name does not resolve.
    Dns,
    /// Cannot connect for another reason (no route, TLS).
    Unreachable,
    /// No answer in time (connecting, the response, or the stream stalled).
    Timeout,
    /// 401 or 403: the key is missing or refused.
    Auth,
    /// 404: wrong endpoint, wrong engine kind, or unknown model.
    NotFound,
    /// Another 4xx: the server refused this request (not the engine's health).
    Rejected,
    /// 503: loading or overloaded.
    Unavailable,
    /// Another 5xx.
    ServerError,
    /// The stream ended before the answer did.
    BrokenStream,
    /// An answer that is not what the API promises.
    Malformed,
}

impl FaultKind {
    /// The class's name, as notices are keyed.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Refused => "refused",
            Self::Dns => "dns",
            Self::Unreachable => "unreachable",
            Self::Timeout => "timeout",
            Self::Auth => "auth",
            Self::NotFound => "not-found",
            Self::Rejected => "rejected",
            Self::Unavailable => "unavailable",
            Self::ServerError => "server-error",
            Self::BrokenStream => "broken-stream",
            Self::Malformed => "malformed",
        }
    }

    /// Whether the fault is the engine's state (wait before trying again) rather than the
    /// one request's.
    pub fn backs_off(self) -> bool {
        self != Self::Rejected
    }

    /// The class of an HTTP error status.
    pub fn of_status(status: u16) -> FaultKind {
        match status {
            401 | 403 => Self::Auth,
            404 => Self::NotFound,
            503 => Self::Unavailable,
            500..=599 => Self::ServerError,
            _ => Self::Rejected,
        }
    }
}

/// One fault: its class and what happened, in words for the user (never holding the key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    pub detail: String,
}

impl Fault {
    pub fn new(kind: FaultKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

/// The first wait after a fault; doubled after each further one, up to [`MAX_DELAY`].
pub const FIRST_DELAY: Duration = Duration::from_millis(500);
pub const MAX_DELAY: Duration = Duration::from_secs(30);

/// What a request may do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Go ahead (`probe`: the engine was failing; this request finds out whether it is back).
    Go { probe: bool },
    /// Answer at once with this fault, without contacting the engine.
    Wait(Fault, Duration),
}

#[derive(Clone, Debug, Default)]
pub struct Backoff {
    failures: u32,
    retry_at: Option<Instant>,
    last: Option<Fault>,
    /// A probe is out: others keep answering at once until it comes back.
    probing: bool,
}

impl Backoff {
    /// Whether the engine is believed to answer (no fault since the last success).
    pub fn healthy(&self) -> bool {
        self.failures == 0
    }

    pub fn admit(&mut self, now: Instant) -> Admit {
        let (Some(at), Some(last)) = (self.retry_at, &self.last) else {
            return Admit::Go { probe: false };
        };
        if now < at || self.probing {
            return Admit::Wait(last.clone(), at.saturating_duration_since(now));
        }
        self.probing = true;
        Admit::Go { probe: true }
    }

    /// A probe ended without an outcome (cancelled): let the next request probe.
    pub fn abandoned(&mut self) {
        self.probing = false;
    }

    /// The engine answered. Returns whether it had been failing.
    pub fn succeeded(&mut self) -> bool {
        let was = self.failures > 0;
        *self = Self::default();
        was
    }

    /// A request failed with `fault`; returns the wait before the next try (zero for a
    /// fault of the request, not the engine).
    pub fn failed(&mut self, fault: Fault, now: Instant) -> Duration {
        self.probing = false;
        if !fault.kind.backs_off() {
            return Duration::ZERO;
        }
        self.failures = self.failures.saturating_add(1);
        let delay = FIRST_DELAY
            .saturating_mul(1u32 << (self.failures - 1).min(16))
            .min(MAX_DELAY);
        self.retry_at = Some(now + delay);
        self.last = Some(fault);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> Fault {
        Fault::new(FaultKind::Refused, "connection refused")
    }

    #[test]
    fn waits_double_then_cap_and_a_success_clears_them() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        assert_eq!(b.admit(t0), Admit::Go { probe: false });
        let mut delays = Vec::new();
        let mut now = t0;
        for _ in 0..10 {
            let d = b.failed(refused(), now);
            delays.push(d.as_millis());
            now += d;
            assert_eq!(b.admit(now), Admit::Go { probe: true });
        }
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000]
        );
        assert!(!b.healthy());
        assert!(b.succeeded());
        assert!(b.healthy());
        assert!(!b.succeeded());
        assert_eq!(b.admit(now), Admit::Go { probe: false });
    }

    #[test]
    fn while_waiting_or_probing_requests_answer_at_once() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        b.failed(refused(), t0);
        match b.admit(t0 + Duration::from_millis(100)) {
            Admit::Wait(f, left) => {
                assert_eq!(f.kind, FaultKind::Refused);
                assert_eq!(left, Duration::from_millis(400));
            }
            other => panic!("{other:?}"),
        }
        let later = t0 + Duration::from_secs(1);
        assert_eq!(b.admit(later), Admit::Go { probe: true });
        // One probe at a time.
        assert!(matches!(b.admit(later), Admit::Wait(..)));
        b.abandoned();
        assert_eq!(b.admit(later), Admit::Go { probe: true });
        assert_eq!(b.failed(refused(), later), Duration::from_secs(1));
    }

    #[test]
    fn a_rejected_request_does_not_stop_the_next() {
        let t0 = Instant::now();
        let mut b = Backoff::default();
        let d = b.failed(Fault::new(FaultKind::of_status(400), "bad"), t0);
        assert_eq!(d, Duration::ZERO);
        assert_eq!(b.admit(t0), Admit::Go { probe: false });
        assert!(b.healthy());
    }

    #[test]
    fn statuses_by_class() {
        let kinds: Vec<_> = [401, 403, 404, 400, 413, 422, 500, 502, 503]
            .into_iter()
            .map(|s| FaultKind::of_status(s).as_str())
            .collect();
        assert_eq!(
            kinds,
            [
                "auth",
                "auth",
                "not-found",
                "rejected",
                "rejected",
                "rejected",
                "server-error",
                "server-error",
                "unavailable"
            ]
        );
    }
}
