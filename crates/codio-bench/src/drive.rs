//! Drives a request function from many concurrent workers and times each call.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use crate::stats::Samples;

/// What one request run measured.
#[derive(Debug)]
pub(crate) struct RequestRun {
    pub(crate) latencies: Samples,
    pub(crate) elapsed: Duration,
}

impl RequestRun {
    /// Completed requests per second.
    pub(crate) fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `count` calls of `call` from `in_flight` concurrent workers (each worker sequential),
/// after `warmup` untimed calls. Every call must succeed.
pub(crate) async fn drive<F, Fut>(
    count: usize,
    in_flight: usize,
    warmup: usize,
    call: F,
) -> anyhow::Result<RequestRun>
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    for _ in 0..warmup {
        call().await?;
    }
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::with_capacity(in_flight);
    for _ in 0..in_flight {
        let next = next.clone();
        let call = call.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Samples::with_capacity(count / in_flight + 1);
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let t = Instant::now();
                call().await?;
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Samples::with_capacity(count);
    for worker in workers {
        all.extend(worker.await??);
    }
    Ok(RequestRun {
        latencies: all,
        elapsed: start.elapsed(),
    })
}
