//! The one way the tests wait: look at a condition again and again until it holds, or fail
//! once a deadline has passed. No test sleeps in the hope that something has happened.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// The shortest pause between two looks.
const POLL: Duration = Duration::from_millis(20);

/// The longest pause between two looks.
const MOST: Duration = Duration::from_millis(250);

/// Looks with `poll` until it yields `Some`, and returns that; panics once `limit` has passed,
/// saying it was waiting for `what` ("the run to finish").
#[track_caller]
pub fn wait_until<T>(what: &str, limit: Duration, poll: impl FnMut() -> Option<T>) -> T {
    match poll_until(what, limit, poll) {
        Ok(value) => value,
        Err(timeout) => timeout.fail(""),
    }
}

/// [`wait_until`], but a time-out is handed back, for the caller to say what it saw last or to
/// end a process it started before it fails with [`TimedOut::fail`].
///
/// It looks every 20 ms; a look that takes time itself (one that runs a program) is followed
/// by a pause four times as long, up to 250 ms, so that waiting takes at most a fifth of a core.
/// The last look is at the deadline.
pub fn poll_until<T>(what: &str, limit: Duration, mut poll: impl FnMut() -> Option<T>) -> Result<T, TimedOut> {
    let deadline = Instant::now() + limit;
    loop {
        let look = Instant::now();
        if let Some(value) = poll() {
            return Ok(value);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(TimedOut {
                what: what.to_string(),
                limit,
            });
        }
        let pause = ((now - look) * 4).clamp(POLL, MOST);
        std::thread::sleep(pause.min(deadline - now));
    }
}

/// A wait whose condition did not hold within its limit.
#[derive(Debug)]
pub struct TimedOut {
    what: String,
    limit: Duration,
}

impl TimedOut {
    /// Fails the test, naming what was awaited and for how long, with `seen` (the state last
    /// seen; may be empty) on the lines below.
    #[track_caller]
    pub fn fail(self, seen: impl Display) -> ! {
        let seen = seen.to_string();
        if seen.is_empty() {
            panic!("{self}")
        }
        panic!("{self}\n{seen}")
    }
}

impl Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "timed out after {:?} waiting for {}", self.limit, self.what)
    }
}

#[test]
fn a_wait_returns_what_the_condition_yields_once_it_holds() {
    let mut looks = 0;
    let got = wait_until("the third look", Duration::from_secs(10), || {
        looks += 1;
        (looks == 3).then_some(looks * 10)
    });
    assert_eq!(got, 30);
}

#[test]
#[should_panic(expected = "timed out after 100ms waiting for a condition that never holds\nlast seen: 42")]
fn a_wait_past_its_limit_fails_naming_what_it_awaited_and_what_it_saw() {
    let start = Instant::now();
    let waited = poll_until(
        "a condition that never holds",
        Duration::from_millis(100),
        || None::<()>,
    );
    assert!(start.elapsed() >= Duration::from_millis(100));
    waited.unwrap_or_else(|timeout| timeout.fail("last seen: 42"));
}
