//! A per-server circuit breaker (field case B15). After a run of transient
//! failures the server is paused: its worker claims nothing, the other
//! servers go on. When the pause ends, one request is let through; its
//! success closes the circuit, its failure pauses the server again for twice
//! as long, up to a ceiling. A server that asks for a pause with
//! `Retry-After` on a 429 or 503 gets it at once.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// What a worker may start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Allowance {
    /// As many jobs as it has room for.
    All,
    /// One job, to probe whether the server is back.
    Probe,
    /// Nothing until then.
    Paused(Instant),
}

/// What a recorded failure did to the circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Opened {
    /// How long the server is paused.
    pub(crate) pause: Duration,
    /// Transient failures in a row so far.
    pub(crate) failures: u32,
}

#[derive(Debug)]
pub(crate) struct Circuit {
    threshold: u32,
    first_pause: Duration,
    max_pause: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Transient failures since the last success.
    failures: u32,
    /// Set while the circuit is open (until then) or half-open (passed).
    open_until: Option<Instant>,
    /// The pause to use the next time it opens from half-open.
    next_pause: Duration,
    /// A probe is in flight; nothing else may start.
    probing: bool,
}

impl Circuit {
    /// `threshold` 0 never opens on its own (a `Retry-After` still pauses).
    pub(crate) fn new(threshold: u32, first_pause: Duration, max_pause: Duration) -> Self {
        let state = State { next_pause: first_pause, ..State::default() };
        Self {
            threshold,
            first_pause,
            max_pause: max_pause.max(first_pause),
            state: Mutex::new(state),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What may start now. Granting a probe marks it in flight.
    pub(crate) fn allowance(&self, now: Instant) -> Allowance {
        let mut state = self.state();
        match state.open_until {
            None => Allowance::All,
            Some(until) if until > now => Allowance::Paused(until),
            Some(_) if state.probing => {
                Allowance::Paused(now + self.first_pause.min(Duration::from_secs(1)))
            }
            Some(_) => {
                state.probing = true;
                Allowance::Probe
            }
        }
    }

    /// A request got through. Returns whether the circuit was open or
    /// half-open (the server is back).
    pub(crate) fn success(&self) -> bool {
        let mut state = self.state();
        let was_open = state.open_until.is_some();
        *state = State { next_pause: self.first_pause, ..State::default() };
        was_open
    }

    /// A request failed in a way that says the server is unwell.
    /// `asked` is a `Retry-After` that came with it. Returns the pause when
    /// this failure opened (or re-opened) the circuit.
    pub(crate) fn failure(&self, now: Instant, asked: Option<Duration>) -> Option<Opened> {
        let mut state = self.state();
        state.failures = state.failures.saturating_add(1);
        let half_open = state.open_until.is_some_and(|until| until <= now);
        let pause = if half_open {
            // The probe failed: pause again, longer.
            let pause = state.next_pause;
            state.next_pause = (pause * 2).min(self.max_pause);
            pause
        } else if state.open_until.is_some() {
            // A request started before the pause failed too; the pause
            // stands.
            return None;
        } else if self.threshold > 0 && state.failures >= self.threshold {
            state.next_pause = (self.first_pause * 2).min(self.max_pause);
            self.first_pause
        } else if asked.is_some() {
            Duration::ZERO
        } else {
            return None;
        };
        let pause = pause.max(asked.unwrap_or_default());
        if pause.is_zero() {
            return None;
        }
        state.open_until = Some(now + pause);
        state.probing = false;
        Some(Opened { pause, failures: state.failures })
    }

    /// A probe ended without telling anything (the job was handed back, or
    /// failed for a reason of its own): let another one through.
    pub(crate) fn probe_inconclusive(&self) {
        self.state().probing = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn opens_after_the_threshold_and_probes_after_the_pause() {
        let circuit = Circuit::new(3, 2 * SEC, 60 * SEC);
        let t0 = Instant::now();
        assert_eq!(circuit.failure(t0, None), None);
        assert_eq!(circuit.failure(t0, None), None);
        assert_eq!(circuit.allowance(t0), Allowance::All);
        assert_eq!(circuit.failure(t0, None), Some(Opened { pause: 2 * SEC, failures: 3 }));
        assert_eq!(circuit.allowance(t0 + SEC), Allowance::Paused(t0 + 2 * SEC));
        // Requests that were already in flight fail too: no longer pause.
        assert_eq!(circuit.failure(t0 + SEC, None), None);
        // After the pause, one probe and nothing beside it.
        let t1 = t0 + 2 * SEC;
        assert_eq!(circuit.allowance(t1), Allowance::Probe);
        assert!(matches!(circuit.allowance(t1), Allowance::Paused(_)));
        // The probe fails: twice as long.
        assert_eq!(circuit.failure(t1, None), Some(Opened { pause: 4 * SEC, failures: 5 }));
        let t2 = t1 + 4 * SEC;
        assert_eq!(circuit.allowance(t2), Allowance::Probe);
        assert_eq!(circuit.failure(t2, None).map(|o| o.pause), Some(8 * SEC));
        // The server is back.
        assert_eq!(circuit.allowance(t2 + 8 * SEC), Allowance::Probe);
        assert!(circuit.success());
        assert_eq!(circuit.allowance(t2 + 8 * SEC), Allowance::All);
        assert!(!circuit.success());
    }

    #[test]
    fn a_success_between_failures_keeps_it_closed() {
        let circuit = Circuit::new(3, SEC, 60 * SEC);
        let t0 = Instant::now();
        for _ in 0..10 {
            assert_eq!(circuit.failure(t0, None), None);
            assert_eq!(circuit.failure(t0, None), None);
            circuit.success();
        }
        assert_eq!(circuit.allowance(t0), Allowance::All);
    }

    #[test]
    fn the_pause_is_capped() {
        let circuit = Circuit::new(1, 10 * SEC, 25 * SEC);
        let mut now = Instant::now();
        let mut pauses = Vec::new();
        for _ in 0..4 {
            let opened = circuit.failure(now, None).unwrap();
            pauses.push(opened.pause.as_secs());
            now += opened.pause;
            assert_eq!(circuit.allowance(now), Allowance::Probe);
        }
        assert_eq!(pauses, [10, 20, 25, 25]);
    }

    #[test]
    fn retry_after_pauses_at_once_and_for_as_long_as_asked() {
        let circuit = Circuit::new(5, SEC, 60 * SEC);
        let t0 = Instant::now();
        assert_eq!(
            circuit.failure(t0, Some(30 * SEC)),
            Some(Opened { pause: 30 * SEC, failures: 1 })
        );
        assert_eq!(circuit.allowance(t0 + 29 * SEC), Allowance::Paused(t0 + 30 * SEC));
        let never = Circuit::new(0, SEC, 60 * SEC);
        for _ in 0..100 {
            assert_eq!(never.failure(t0, None), None);
        }
        assert_eq!(never.failure(t0, Some(SEC)).map(|o| o.pause), Some(SEC));
    }

    #[test]
    fn an_inconclusive_probe_lets_another_through() {
        let circuit = Circuit::new(1, SEC, 60 * SEC);
        let t0 = Instant::now();
        circuit.failure(t0, None);
        assert_eq!(circuit.allowance(t0 + SEC), Allowance::Probe);
        circuit.probe_inconclusive();
        assert_eq!(circuit.allowance(t0 + SEC), Allowance::Probe);
    }
}
