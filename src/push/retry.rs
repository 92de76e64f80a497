//! Retrying a push by the providers' rules: capped exponential backoff with full jitter, at least
//! the `Retry-After` the provider asked for, at least a minute after an FCM quota error, within a
//! maximum number of attempts and a per-push deadline.
//!
//! A push waiting for its retry keeps its concurrency slot, on purpose: when a provider is
//! overloaded or over quota, sending less is the point. It holds only its own provider's slots,
//! so the other provider carries on.

use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use super::engine::{Admission, Gate};
use super::{Push, PushOutcome, Pusher};
use crate::backoff::Backoff;
use crate::pacing::Pacer;

/// The `[retry]` settings: how often and how long a push is tried again.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    pub push_deadline_secs: u64,
    pub quota_min_delay_secs: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub deadline: Duration,
    pub quota_min_delay: Duration,
}

impl From<&RetrySettings> for RetryPolicy {
    fn from(s: &RetrySettings) -> Self {
        Self {
            max_attempts: s.max_attempts,
            initial_backoff: Duration::from_millis(s.initial_backoff_ms),
            max_backoff: Duration::from_millis(s.max_backoff_ms),
            deadline: Duration::from_secs(s.push_deadline_secs),
            quota_min_delay: Duration::from_secs(s.quota_min_delay_secs),
        }
    }
}

/// What [`deliver`] ended with, and after how many attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delivered {
    pub outcome: PushOutcome,
    pub attempts: u32,
}

impl RetryPolicy {
    /// The wait before the next attempt after a retryable outcome.
    /// The jitter is added on top of any floor (`Retry-After`, the quota minute), so that pushes
    /// told to wait the same time do not all come back in the same instant.
    fn delay(&self, backoff: &mut Backoff, retry_after: Option<Duration>, quota: bool) -> Duration {
        let mut floor = retry_after.unwrap_or_default();
        if quota {
            floor = floor.max(self.quota_min_delay);
        }
        floor + backoff.next_delay()
    }
}

/// Sends `push`, retrying retryable failures while the policy allows. A retryable outcome comes
/// back only once the attempts or the deadline are used up. `paused` stops further attempts when
/// the provider's credentials were rejected meanwhile. Every attempt waits for a permit from
/// `pacer` (the deployment's rate for the app's provider), and a quota error slows that rate.
/// `app` names the push's app in the retry metric. Every attempt is let through by `gate`: held
/// while it holds, and withdrawn (`None`, not settled) once it is shut, so a run that lost its
/// claim or was cancelled starts no further attempt, retries included.
pub(crate) async fn deliver(
    pusher: &dyn Pusher,
    push: &Push,
    policy: &RetryPolicy,
    pacer: &Pacer,
    app: &str,
    paused: &(dyn Fn() -> bool + Send + Sync),
    gate: &dyn Gate,
) -> Option<Delivered> {
    let first = Instant::now();
    let mut backoff = Backoff::new(policy.initial_backoff, policy.max_backoff);
    let mut attempts = 0;
    loop {
        if paused() {
            return Some(Delivered {
                outcome: PushOutcome::Skipped {
                    reason: "provider paused: credentials rejected".into(),
                },
                attempts,
            });
        }
        attempts += 1;
        pacer.acquire().await;
        if !let_through(gate).await {
            return None;
        }
        let outcome = pusher.push(push).await;
        let PushOutcome::Retryable {
            retry_after, quota, ..
        } = &outcome
        else {
            return Some(Delivered { outcome, attempts });
        };
        if *quota {
            // Boxed, as the pacer's own waits are (see `Pacer::acquire`): rare, and large.
            Box::pin(pacer.quota_exceeded()).await;
        }
        let delay = policy.delay(&mut backoff, *retry_after, *quota);
        if attempts >= policy.max_attempts || first.elapsed() + delay > policy.deadline {
            return Some(Delivered { outcome, attempts });
        }
        if let (Some(provider), PushOutcome::Retryable { reason, .. }) =
            (push.device.provider, &outcome)
        {
            super::metrics::retry(app, provider, reason);
        }
        tokio::time::sleep(delay).await;
    }
}

/// Waits while `gate` holds; false once it is shut.
async fn let_through(gate: &dyn Gate) -> bool {
    loop {
        match gate.admission() {
            Admission::Go => return true,
            Admission::Shut => return false,
            Admission::Hold => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::audience::{Device, Provider};
    use crate::content::Notification;
    use crate::push::Reason;

    /// Answers from a script, and notes when each attempt came.
    struct Scripted {
        answers: Mutex<VecDeque<PushOutcome>>,
        calls: Mutex<Vec<Instant>>,
    }

    impl Scripted {
        fn new(answers: Vec<PushOutcome>) -> Self {
            Self {
                answers: Mutex::new(answers.into()),
                calls: Mutex::new(Vec::new()),
            }
        }
        fn gaps(&self) -> Vec<Duration> {
            let calls = self.calls.lock().unwrap();
            calls.windows(2).map(|w| w[1] - w[0]).collect()
        }
    }

    #[async_trait::async_trait]
    impl Pusher for Scripted {
        async fn push(&self, _: &Push) -> PushOutcome {
            self.calls.lock().unwrap().push(Instant::now());
            self.answers
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(PushOutcome::Delivered)
        }
    }

    fn push() -> Push {
        Push {
            event_id: "e".into(),
            device: Device {
                id: 1,
                user_id: None,
                provider: Some(Provider::Fcm),
                platform: None,
                app: Some(crate::apps::AppId::DEFAULT),
                token: "t".into(),
                locale: None,
                updated_at: None,
            },
            content: Arc::new(Notification {
                title: String::new(),
                body: String::new(),
                data: vec![],
                collapse_id: "e".into(),
                thread_id: "p".into(),
            })
            .into(),
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            deadline: Duration::from_secs(600),
            quota_min_delay: Duration::from_secs(60),
        }
    }

    /// One `deliver` of the test push, unpaced, paused or not, through an open gate.
    async fn send(p: &Scripted, policy: &RetryPolicy, paused: bool) -> Delivered {
        let open = crate::push::engine::Open;
        deliver(
            p,
            &push(),
            policy,
            &Pacer::unpaced(),
            "default",
            &move || paused,
            &open,
        )
        .await
        .expect("an open gate withdraws nothing")
    }

    /// Says `Hold` for the first `held` checks, then each of `then` in turn (the last one stays).
    struct Scripted2 {
        checks: Mutex<VecDeque<Admission>>,
    }

    impl Scripted2 {
        fn new(answers: Vec<Admission>) -> Self {
            Self {
                checks: Mutex::new(answers.into()),
            }
        }
    }

    impl Gate for Scripted2 {
        fn admission(&self) -> Admission {
            let mut checks = self.checks.lock().unwrap();
            if checks.len() > 1 {
                checks.pop_front().unwrap()
            } else {
                checks[0]
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_attempt_waits_and_a_shut_gate_withdraws_the_retry() {
        use Admission::{Go, Hold, Shut};
        let unpaced = Pacer::unpaced();
        let gate = Scripted2::new(vec![Hold, Hold, Hold, Go]);
        let p = Scripted::new(vec![]);
        let done = deliver(&p, &push(), &policy(), &unpaced, "d", &|| false, &gate).await;
        assert_eq!(
            done.map(|d| d.attempts),
            Some(1),
            "sent once the hold lifts"
        );
        // The first attempt fails; the gate shuts before the retry: nothing more is sent.
        let gate = Scripted2::new(vec![Go, Shut]);
        let p = Scripted::new(vec![unavailable(None)]);
        let done = deliver(&p, &push(), &policy(), &unpaced, "d", &|| false, &gate).await;
        assert_eq!(done, None);
        assert_eq!(p.calls.lock().unwrap().len(), 1, "the retry was never sent");
    }

    fn unavailable(after: Option<u64>) -> PushOutcome {
        PushOutcome::Retryable {
            reason: Reason::new(Provider::Fcm, "UNAVAILABLE"),
            retry_after: after.map(Duration::from_secs),
            quota: false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_retryable_failure_is_retried_until_it_succeeds() {
        let p = Scripted::new(vec![unavailable(None), unavailable(None)]);
        let done = send(&p, &policy(), false).await;
        assert_eq!(
            done,
            Delivered {
                outcome: PushOutcome::Delivered,
                attempts: 3
            }
        );
        // Full jitter: each wait is at most the doubling ceiling.
        let gaps = p.gaps();
        assert!(
            gaps[0] <= Duration::from_millis(500) && gaps[1] <= Duration::from_millis(1000),
            "{gaps:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured_when_longer_than_the_backoff() {
        let p = Scripted::new(vec![unavailable(Some(7))]);
        send(&p, &policy(), false).await;
        assert!(p.gaps()[0] >= Duration::from_secs(7), "{:?}", p.gaps());
    }

    #[test]
    fn pushes_told_to_wait_the_same_time_come_back_spread_out() {
        let p = policy();
        let delays: Vec<Duration> = (0..50)
            .map(|_| {
                p.delay(
                    &mut Backoff::new(p.initial_backoff, p.max_backoff),
                    None,
                    true,
                )
            })
            .collect();
        assert!(delays.iter().all(|d| *d >= Duration::from_secs(60)));
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 40, "jittered above the floor");
    }

    #[tokio::test(start_paused = true)]
    async fn a_quota_error_waits_at_least_a_minute() {
        let quota = PushOutcome::Retryable {
            reason: Reason::new(Provider::Fcm, "QUOTA_EXCEEDED"),
            retry_after: Some(Duration::from_secs(5)),
            quota: true,
        };
        let p = Scripted::new(vec![quota]);
        let done = send(&p, &policy(), false).await;
        assert_eq!(done.outcome, PushOutcome::Delivered);
        assert!(p.gaps()[0] >= Duration::from_secs(60), "{:?}", p.gaps());
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_and_the_deadline_bound_the_retries() {
        let p = Scripted::new(vec![unavailable(None); 10]);
        let done = send(&p, &policy(), false).await;
        assert_eq!(done.attempts, 4);
        assert_eq!(done.outcome.label(), "retryable");

        let short = RetryPolicy {
            deadline: Duration::from_secs(10),
            ..policy()
        };
        let p = Scripted::new(vec![unavailable(Some(30)); 10]);
        let done = send(&p, &short, false).await;
        assert_eq!(
            done.attempts, 1,
            "a 30 s Retry-After does not fit a 10 s deadline"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_outcomes_are_not_retried() {
        for outcome in [
            PushOutcome::Rejected {
                reason: Reason::new(Provider::Fcm, "INVALID_ARGUMENT"),
            },
            PushOutcome::Unregistered {
                reason: Reason::new(Provider::Fcm, "UNREGISTERED"),
                since: None,
            },
            PushOutcome::CredentialsRejected {
                reason: Reason::uncoded(Provider::Fcm, "x"),
                setting: "S",
                scope: crate::push::PauseScope::Provider,
            },
        ] {
            let p = Scripted::new(vec![outcome.clone()]);
            let done = send(&p, &policy(), false).await;
            assert_eq!(
                done,
                Delivered {
                    outcome,
                    attempts: 1
                }
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_paused_provider_gets_no_further_attempt() {
        let p = Scripted::new(vec![]);
        let done = send(&p, &policy(), true).await;
        assert_eq!((done.outcome.label(), done.attempts), ("skipped", 0));
    }
}
