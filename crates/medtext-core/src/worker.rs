//! The inference worker: one thread that owns a classifier and takes work
//! from a bounded queue, so the UI thread, the local API and batch jobs never
//! run a forward pass themselves, and a flood of requests is refused with a
//! clear message instead of piling up memory.
//!
//! Requests that are waiting when the worker picks up work are served
//! together by [`Classifier::classify_batch`], grouped by length under a
//! token budget: under load, throughput rises instead of latency.
//! Inference threads are the process-wide setting of
//! [`crate::runtime::configure`].

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use zeroize::Zeroize;

use crate::{Classification, Classifier, Error, Result};

/// Requests a worker holds by default before it refuses more.
pub const DEFAULT_QUEUE: usize = 64;

/// Texts served together at most, across the requests waiting at once.
const TEXTS_PER_ROUND: usize = 256;

enum Job {
    Classify {
        texts: Vec<String>,
        reply: SyncSender<Result<Vec<Result<Classification>>>>,
    },
    Evidence {
        text: String,
        reply: SyncSender<Result<Classification>>,
    },
}

/// A handle to the worker thread. Dropping it lets the thread finish what is
/// queued and stop.
pub struct Worker {
    queue: Option<SyncSender<Job>>,
    capacity: usize,
    thread: Option<JoinHandle<()>>,
    classifier: Arc<Classifier>,
}

impl Worker {
    /// Starts a worker for `classifier` that queues at most `capacity`
    /// requests.
    pub fn start(classifier: Arc<Classifier>, capacity: usize) -> Result<Self> {
        let capacity = capacity.max(1);
        let (queue, jobs) = mpsc::sync_channel(capacity);
        let for_thread = Arc::clone(&classifier);
        let thread = std::thread::Builder::new()
            .name("medtext-inference".into())
            .spawn(move || serve(&for_thread, &jobs))
            .map_err(|e| Error::Engine(format!("cannot start the inference thread: {e}")))?;
        Ok(Self {
            queue: Some(queue),
            capacity,
            thread: Some(thread),
            classifier,
        })
    }

    /// The classifier this worker runs (for its pack and labels).
    pub fn classifier(&self) -> &Classifier {
        &self.classifier
    }

    /// Classifies `texts` on the worker and waits for the results (see
    /// [`Classifier::classify_batch`]).
    pub fn classify(&self, texts: Vec<String>) -> Result<Vec<Result<Classification>>> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.submit(Job::Classify { texts, reply })?;
        answer.recv().map_err(|_| stopped())?
    }

    /// Classifies `text` with word evidence on the worker and waits.
    pub fn classify_with_evidence(&self, text: String) -> Result<Classification> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.submit(Job::Evidence { text, reply })?;
        answer.recv().map_err(|_| stopped())?
    }

    fn submit(&self, job: Job) -> Result<()> {
        let queue = self.queue.as_ref().ok_or_else(stopped)?;
        queue.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => Error::Busy {
                capacity: self.capacity,
            },
            TrySendError::Disconnected(_) => stopped(),
        })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Closing the queue ends the loop once it is empty.
        self.queue.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn stopped() -> Error {
    Error::Engine("the inference worker has stopped; restart MedText".into())
}

fn serve(classifier: &Classifier, jobs: &Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        // Everything already waiting is served in the same round.
        let mut round = vec![first];
        let mut texts = round_texts(&round);
        while texts < TEXTS_PER_ROUND {
            match jobs.try_recv() {
                Ok(job) => {
                    round.push(job);
                    texts = round_texts(&round);
                }
                Err(_) => break,
            }
        }
        run_round(classifier, round);
    }
}

fn round_texts(round: &[Job]) -> usize {
    round
        .iter()
        .map(|job| match job {
            Job::Classify { texts, .. } => texts.len(),
            Job::Evidence { .. } => 1,
        })
        .sum()
}

fn run_round(classifier: &Classifier, round: Vec<Job>) {
    let mut texts: Vec<String> = Vec::new();
    let mut waiting = Vec::new();
    for job in round {
        match job {
            Job::Classify { texts: mine, reply } => {
                waiting.push((texts.len()..texts.len() + mine.len(), reply));
                texts.extend(mine);
            }
            Job::Evidence { mut text, reply } => {
                // A requester that gave up is no reason to stop.
                let _ = reply.send(classifier.classify_with_evidence(&text));
                text.zeroize();
            }
        }
    }
    if waiting.is_empty() {
        return;
    }
    let outcome = classifier.classify_batch(&texts);
    // The texts are not needed past this point: clear them from memory.
    texts.zeroize();
    match outcome {
        Ok(results) => {
            let mut results = results.into_iter();
            for (range, reply) in waiting {
                let mine: Vec<_> = results.by_ref().take(range.len()).collect();
                let _ = reply.send(Ok(mine));
            }
        }
        Err(e) => {
            let message = e.to_string();
            for (_, reply) in waiting {
                let _ = reply.send(Err(Error::Engine(message.clone())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::tests::write_tiny_pack;

    fn tiny_worker(root: &std::path::Path, capacity: usize) -> Worker {
        write_tiny_pack(root);
        let classifier = Classifier::load(root, "tiny-pack", None).unwrap();
        Worker::start(Arc::new(classifier), capacity).unwrap()
    }

    #[test]
    fn the_worker_returns_what_the_classifier_returns() {
        let dir = tempfile::tempdir().unwrap();
        let worker = tiny_worker(dir.path(), 4);
        let texts = vec!["fever and cough".to_string(), " ".to_string()];
        let results = worker.classify(texts).unwrap();
        let direct = worker.classifier().classify("fever and cough").unwrap();
        assert_eq!(results[0].as_ref().unwrap().top.id, direct.top.id);
        assert!(matches!(results[1], Err(Error::EmptyText)));
        let explained = worker
            .classify_with_evidence("chest pain".to_string())
            .unwrap();
        assert_eq!(explained.evidence.len(), 2);
    }

    #[test]
    fn requests_from_many_threads_are_all_answered() {
        let dir = tempfile::tempdir().unwrap();
        let worker = Arc::new(tiny_worker(dir.path(), 64));
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let worker = Arc::clone(&worker);
                std::thread::spawn(move || {
                    let text = "fever cough ".repeat(i + 1);
                    let results = worker.classify(vec![text.clone()]).unwrap();
                    let direct = worker.classifier().classify(&text).unwrap();
                    let got = results.into_iter().next().unwrap().unwrap();
                    assert_eq!(got.windows, direct.windows);
                    assert!((got.top.probability - direct.top.probability).abs() < 1e-5);
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }

    #[test]
    fn a_full_queue_is_refused_not_grown() {
        let dir = tempfile::tempdir().unwrap();
        write_tiny_pack(dir.path());
        let classifier = Arc::new(Classifier::load(dir.path(), "tiny-pack", None).unwrap());
        // A queue of one with no thread taking work: the second request must
        // be refused at once.
        let (queue, _jobs) = mpsc::sync_channel(1);
        let worker = Worker {
            queue: Some(queue),
            capacity: 1,
            thread: None,
            classifier,
        };
        let (reply, _answer) = mpsc::sync_channel(1);
        worker
            .submit(Job::Classify {
                texts: vec!["fever".into()],
                reply: reply.clone(),
            })
            .unwrap();
        let refused = worker.submit(Job::Classify {
            texts: vec!["fever".into()],
            reply,
        });
        assert!(
            matches!(refused, Err(Error::Busy { capacity: 1 })),
            "{refused:?}"
        );
    }
}
