//! The dispatch threads: where workers live and run their batches.
//!
//! Each thread owns a single-threaded tokio runtime holding some of the
//! workers (assigned round-robin) and a queue of blocking jobs. It
//! alternates between driving its workers (until one of them queues a
//! job) and running that job (a fjall read, then the plugin calls) on the
//! thread itself, outside the runtime. So a batch never changes threads:
//! handing every batch to tokio's blocking pool cost two thread wake-ups,
//! and at moderate load, where batches hold one or two messages, those
//! context switches were a third of the engine's CPU. Jobs run outside the
//! runtime because a plugin may block in WASI (a sleep), which wasmtime
//! serves by blocking on a runtime, not allowed inside another.
//!
//! The number of threads is the bound on plugin executions at once.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A batch to run. A worker queues one and waits for it, so a queue holds
/// at most one job per worker of its lane.
type Job = Box<dyn FnOnce() + Send>;

/// One dispatch thread, as seen by the workers it holds.
#[derive(Clone)]
pub struct Lane {
    runtime: Handle,
    jobs: mpsc::UnboundedSender<Job>,
}

impl Lane {
    /// Runs `job` on this lane's thread, between two rounds of its workers;
    /// `None` if the thread stopped (or the job panicked) first.
    pub async fn run<R: Send + 'static>(
        &self,
        job: impl FnOnce() -> R + Send + 'static,
    ) -> Option<R> {
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(job());
        });
        self.jobs.send(job).ok()?;
        result.await.ok()
    }

    /// Starts a worker on this lane.
    pub fn spawn(&self, worker: impl Future<Output = ()> + Send + 'static) -> JoinHandle<()> {
        self.runtime.spawn(worker)
    }
}

pub struct DispatchThreads {
    lanes: Vec<Lane>,
    next: AtomicUsize,
    stop: CancellationToken,
}

impl DispatchThreads {
    pub fn start(threads: usize) -> std::io::Result<DispatchThreads> {
        let stop = CancellationToken::new();
        let mut lanes = Vec::new();
        for index in 0..threads.max(1) {
            // Timers only: workers wait on the store's notifications and
            // sleep for backoffs, but never do I/O here, and without an
            // I/O driver an idle thread parks on a futex instead of
            // `epoll_wait`, which is cheaper at a wake-up per batch.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()?;
            let (jobs, queue) = mpsc::unbounded_channel();
            lanes.push(Lane {
                runtime: runtime.handle().clone(),
                jobs,
            });
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("courier-dispatch-{index}"))
                .spawn(move || run(runtime, queue, stop))?;
        }
        Ok(DispatchThreads {
            lanes,
            next: AtomicUsize::new(0),
            stop,
        })
    }

    /// The lane for the next worker (round-robin, so a plugin's partitions
    /// spread over every thread).
    pub fn next_lane(&self) -> Lane {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.lanes.len();
        self.lanes[index].clone()
    }
}

impl Drop for DispatchThreads {
    /// The threads end after their current job; nobody waits for them (a
    /// plugin call may take until its deadline).
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn run(
    runtime: tokio::runtime::Runtime,
    mut queue: mpsc::UnboundedReceiver<Job>,
    stop: CancellationToken,
) {
    loop {
        let job = runtime.block_on(async {
            // Let the workers woken meanwhile (settles answered, new
            // messages) take their turn before the next job.
            tokio::task::yield_now().await;
            tokio::select! {
                biased;
                _ = stop.cancelled() => None,
                job = queue.recv() => job,
            }
        });
        let Some(job) = job else { return };
        // A panicking job drops its answer: the worker sees `None`.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a job sees of where it runs.
    fn whereabouts() -> (Option<String>, bool) {
        let name = std::thread::current().name().map(str::to_owned);
        (name, Handle::try_current().is_ok())
    }

    #[tokio::test]
    async fn jobs_run_on_their_lanes_thread_outside_any_runtime() {
        let threads = DispatchThreads::start(2).expect("threads start");
        for expected in ["courier-dispatch-0", "courier-dispatch-1"] {
            let lane = threads.next_lane();
            let worker_lane = lane.clone();
            let seen = lane
                .spawn_result(async move {
                    let (worker_thread, _) = whereabouts();
                    let job = worker_lane.run(whereabouts).await;
                    (worker_thread, job)
                })
                .await;
            let (worker_thread, job) = seen;
            let (job_thread, job_in_runtime) = job.expect("the job ran");
            assert_eq!(worker_thread.as_deref(), Some(expected));
            assert_eq!(job_thread.as_deref(), Some(expected));
            assert!(
                !job_in_runtime,
                "a job must run outside the runtime: WASI may block on one"
            );
        }
    }

    #[tokio::test]
    async fn a_panicking_job_answers_none_and_the_lane_goes_on() {
        let threads = DispatchThreads::start(1).expect("threads start");
        let lane = threads.next_lane();
        let worker_lane = lane.clone();
        let (panicked, next) = lane
            .spawn_result(async move {
                let panicked = worker_lane.run(|| panic!("a bug in a step")).await;
                let next = worker_lane.run(|| 7).await;
                (panicked.is_none(), next)
            })
            .await;
        assert!(panicked);
        assert_eq!(next, Some(7));
    }

    #[tokio::test]
    async fn dropping_the_threads_stops_them() {
        let threads = DispatchThreads::start(1).expect("threads start");
        let lane = threads.next_lane();
        drop(threads);
        // The thread ends after the stop; a job sent later gets no answer.
        let answer = tokio::time::timeout(std::time::Duration::from_secs(5), lane.run(|| 1))
            .await
            .expect("answered or refused in time");
        assert_eq!(answer, None);
    }

    impl Lane {
        /// Runs `future` as a worker on this lane and waits for its output.
        async fn spawn_result<T: Send + 'static>(
            &self,
            future: impl Future<Output = T> + Send + 'static,
        ) -> T {
            let (done, result) = oneshot::channel();
            self.spawn(async move {
                let _ = done.send(future.await);
            });
            result.await.expect("the worker finished")
        }
    }
}
