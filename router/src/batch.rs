//! Group commit for any kind of job: callers submit jobs to a bounded queue; one task
//! takes everything that has queued up (at most `max` jobs) and runs it as one batch,
//! then answers every caller on its own. While a batch runs, the next one queues up,
//! so batches grow with the load and a lone job waits for nothing.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::FutureExt;
use std::panic::AssertUnwindSafe;
use tokio::sync::{mpsc, oneshot};

/// A queue of jobs `J` answered by `R`, run in batches by one task.
pub struct Batcher<J, R> {
    tx: mpsc::Sender<(J, oneshot::Sender<R>)>,
    stats: Arc<Stats>,
}

#[derive(Default)]
struct Stats {
    batches: AtomicU64,
    jobs: AtomicU64,
}

impl<J, R> std::fmt::Debug for Batcher<J, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (batches, jobs) = self.stats();
        f.debug_struct("Batcher")
            .field("batches", &batches)
            .field("jobs", &jobs)
            .finish()
    }
}

impl<J: Send + 'static, R: Send + 'static> Batcher<J, R> {
    /// Spawns the batch task on the current tokio runtime. `run` gets the jobs in
    /// arrival order and must return one answer per job, in the same order. The task
    /// ends when every handle to the batcher is dropped.
    pub fn spawn<F, Fut>(queue: usize, max: usize, run: F) -> Self
    where
        F: Fn(Vec<J>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<R>> + Send + 'static,
    {
        let (tx, mut rx) = mpsc::channel::<(J, oneshot::Sender<R>)>(queue.max(1));
        let stats = Arc::new(Stats::default());
        let counters = Arc::clone(&stats);
        let max = max.max(1);
        tokio::spawn(async move {
            let mut replies = Vec::with_capacity(max);
            while let Some((job, reply)) = rx.recv().await {
                let mut jobs = Vec::with_capacity(max);
                jobs.push(job);
                replies.push(reply);
                while jobs.len() < max {
                    match rx.try_recv() {
                        Ok((job, reply)) => {
                            jobs.push(job);
                            replies.push(reply);
                        }
                        Err(_) => break,
                    }
                }
                let n = jobs.len();
                // a panic in one batch answers none of its callers (they see the batcher
                // gone: outcome unknown) and the queue goes on with the next batch
                let answers = match AssertUnwindSafe(run(jobs)).catch_unwind().await {
                    Ok(answers) => {
                        debug_assert_eq!(answers.len(), n, "one answer per job");
                        counters.batches.fetch_add(1, Ordering::Relaxed);
                        counters.jobs.fetch_add(n as u64, Ordering::Relaxed);
                        answers
                    }
                    Err(_) => Vec::new(),
                };
                // a job without an answer (a bug in `run`) drops its reply: the caller
                // sees the batcher gone, never somebody else's answer
                for (reply, answer) in replies.drain(..).zip(answers) {
                    let _ = reply.send(answer);
                }
                replies.clear();
            }
        });
        Self { tx, stats }
    }

    /// Queues `job` and waits for its answer; `None` when the batch task is gone
    /// (its runtime shut down, or `run` panicked).
    pub async fn submit(&self, job: J) -> Option<R> {
        let (reply, rx) = oneshot::channel();
        self.tx.send((job, reply)).await.ok()?;
        rx.await.ok()
    }
}

impl<J, R> Batcher<J, R> {
    /// (batches run, jobs answered) so far.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.stats.batches.load(Ordering::Relaxed),
            self.stats.jobs.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn every_caller_gets_its_own_answer_and_jobs_are_batched() {
        let b = Arc::new(Batcher::spawn(64, 8, |jobs: Vec<u32>| async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            jobs.into_iter().map(|j| j * 10).collect::<Vec<_>>()
        }));
        let calls: Vec<_> = (0..40u32)
            .map(|i| {
                let b = Arc::clone(&b);
                tokio::spawn(async move { (i, b.submit(i).await) })
            })
            .collect();
        for c in calls {
            let (i, answer) = c.await.expect("task");
            assert_eq!(answer, Some(i * 10));
        }
        let (batches, jobs) = b.stats();
        assert_eq!(jobs, 40);
        assert!(batches < 40, "40 concurrent jobs ran in {batches} batches");
        assert!(batches >= 5, "at most 8 per batch, got {batches} batches");
    }

    #[tokio::test]
    async fn a_panicking_batch_answers_none_of_its_callers_and_the_queue_goes_on() {
        let b = Batcher::spawn(4, 4, |jobs: Vec<u32>| async move {
            if jobs.contains(&13) {
                panic!("boom");
            }
            jobs
        });
        assert_eq!(b.submit(13).await, None);
        assert_eq!(b.submit(1).await, Some(1));
        assert_eq!(b.stats(), (1, 1), "the panicked batch is not counted");
    }
}
