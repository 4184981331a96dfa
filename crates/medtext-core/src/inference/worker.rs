//! The inference worker: one thread that owns a classifier and runs every
//! forward pass, so the UI thread, the local API and batch jobs never run one
//! themselves, and a flood of requests is refused with a clear message
//! ([`Error::Busy`]) instead of piling up memory.
//!
//! Requests share the worker in rounds, so that one request with long notes
//! cannot hold it while a one-line request waits: the worker keeps the
//! requests in progress, and each round takes the next windows of every one
//! of them, up to [`ROUND_TOKENS_PER_REQUEST`] tokens each (at least one
//! window), runs them together in forward passes grouped by length
//! (`Classifier::advance`), and answers every request whose windows have
//! all run. Requests that arrive meanwhile join the next round. A text's
//! result is the mean of its windows' probabilities, so it is the same
//! whatever rounds its windows ran in.
//!
//! Texts are read (validated and tokenized) on the caller's thread before
//! they are queued ([`Worker::prepare`]), so a front end can refuse a request
//! over its token limit before any inference. Inference threads are the
//! process-wide setting of [`crate::machine::runtime::configure`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use zeroize::Zeroize;

use crate::inference::classifier::Pending;
use crate::{
    inference::classifier::Classification, inference::classifier::Classifier, Error, Result,
};

/// Requests a worker holds (queued or in progress) by default before it
/// refuses more.
pub const DEFAULT_QUEUE: usize = 64;

/// Tokens of windows each request in progress gets in a round (at least one
/// window, however long): a quarter of a forward pass's
/// [`crate::inference::classifier::TOKENS_PER_BATCH`], eight windows of 256 tokens, so
/// a new request waits about two rounds' share of each request ahead of it,
/// while a single long request still runs its windows many at a time (as
/// fast as all at once, measured on a 48-window note).
pub const ROUND_TOKENS_PER_REQUEST: usize = crate::inference::classifier::TOKENS_PER_BATCH / 4;

type Reply = SyncSender<Result<Vec<Result<Classification>>>>;

enum Job {
    Classify {
        texts: Prepared,
        reply: Reply,
    },
    Evidence {
        text: String,
        reply: SyncSender<Result<Classification>>,
        place: Place,
    },
}

/// Texts read for one worker ([`Worker::prepare`]), each with its own error
/// (an empty text, say), ready to be classified. It holds a place in the
/// worker until it is answered or dropped.
pub struct Prepared {
    texts: Vec<Result<Pending>>,
    place: Place,
}

impl Prepared {
    /// Tokens in the texts that could be read: what a request asks of the
    /// worker.
    pub fn tokens(&self) -> usize {
        self.texts.iter().flatten().map(Pending::tokens).sum()
    }
}

/// A request's place in its worker, given back when dropped (also when a
/// front end refuses the request after reading it).
struct Place(Arc<AtomicUsize>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A handle to the worker thread. Dropping it lets the thread finish what is
/// queued and in progress, and stop.
pub struct Worker {
    queue: Option<SyncSender<Job>>,
    capacity: usize,
    /// Places taken: requests being read, queued or in progress.
    places: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
    classifier: Arc<Classifier>,
}

impl Worker {
    /// Starts a worker for `classifier` that holds at most `capacity`
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
            places: Arc::new(AtomicUsize::new(0)),
            thread: Some(thread),
            classifier,
        })
    }

    /// The classifier this worker runs (for its pack and labels).
    pub fn classifier(&self) -> &Classifier {
        &self.classifier
    }

    /// Classifies `texts` on the worker and waits for the results (the same
    /// as [`Classifier::classify_batch`]). The texts are wiped once read.
    pub fn classify(&self, mut texts: Vec<String>) -> Result<Vec<Result<Classification>>> {
        let prepared = self.prepare(&texts);
        texts.zeroize();
        self.classify_prepared(prepared?)
    }

    /// Reads `texts` on this thread, taking a place in the worker first
    /// ([`Error::Busy`] when it has none left): what [`Prepared::tokens`]
    /// needs to bound a request before it is queued.
    pub fn prepare<S: AsRef<str>>(&self, texts: &[S]) -> Result<Prepared> {
        let place = self.place()?;
        Ok(Prepared {
            texts: texts
                .iter()
                .map(|t| self.classifier.begin(t.as_ref()))
                .collect(),
            place,
        })
    }

    /// Classifies texts this worker read and waits for the results.
    pub fn classify_prepared(&self, texts: Prepared) -> Result<Vec<Result<Classification>>> {
        if !Arc::ptr_eq(&texts.place.0, &self.places) {
            return Err(Error::Engine(
                "the texts were read for another model pack; send them again".into(),
            ));
        }
        let (reply, answer) = mpsc::sync_channel(1);
        self.submit(Job::Classify { texts, reply })?;
        answer.recv().map_err(|_| stopped())?
    }

    /// Classifies `text` with word evidence on the worker and waits.
    pub fn classify_with_evidence(&self, text: String) -> Result<Classification> {
        let (reply, answer) = mpsc::sync_channel(1);
        let place = self.place()?;
        self.submit(Job::Evidence { text, reply, place })?;
        answer.recv().map_err(|_| stopped())?
    }

    fn place(&self) -> Result<Place> {
        self.places
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |taken| {
                (taken < self.capacity).then_some(taken + 1)
            })
            .map(|_| Place(Arc::clone(&self.places)))
            .map_err(|_| Error::Busy {
                capacity: self.capacity,
            })
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
        // Closing the queue ends the loop once nothing is left to do.
        self.queue.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn stopped() -> Error {
    Error::Engine("the inference worker has stopped; restart MedText".into())
}

/// A classify request in progress.
struct Request {
    texts: Prepared,
    reply: Reply,
}

fn serve(classifier: &Classifier, jobs: &Receiver<Job>) {
    let mut active: Vec<Request> = Vec::new();
    loop {
        // Idle, wait for work; otherwise take what arrived during the last
        // round, without waiting.
        let first = if active.is_empty() {
            match jobs.recv() {
                Ok(job) => Some(job),
                Err(_) => return,
            }
        } else {
            None
        };
        for job in first.into_iter().chain(jobs.try_iter()) {
            match job {
                Job::Classify { texts, reply } => active.push(Request { texts, reply }),
                Job::Evidence {
                    mut text,
                    reply,
                    place,
                } => {
                    let explained = classifier.classify_with_evidence(&text);
                    text.zeroize();
                    drop(place);
                    // A requester that gave up is no reason to stop.
                    let _ = reply.send(explained);
                }
            }
        }
        run_round(classifier, &mut active);
    }
}

/// Runs one round (see the module's documentation) and answers the requests
/// it completes; if the engine fails, every request in progress gets the
/// error.
fn run_round(classifier: &Classifier, active: &mut Vec<Request>) {
    let mut work: Vec<(&mut Pending, usize)> = Vec::new();
    for request in active.iter_mut() {
        let mut taken = 0;
        for text in request.texts.texts.iter_mut().flatten() {
            let mut windows = 0;
            for window in text.windows_left() {
                if taken > 0 && taken + window.len() > ROUND_TOKENS_PER_REQUEST {
                    break;
                }
                taken += window.len();
                windows += 1;
            }
            if windows > 0 {
                work.push((text, windows));
            }
        }
    }
    let outcome = classifier.advance(&mut work);
    drop(work);
    let finished = |r: &Request| {
        r.texts
            .texts
            .iter()
            .flatten()
            .all(|t| t.windows_left().is_empty())
    };
    match outcome {
        Ok(()) => {
            let (done, going): (Vec<_>, Vec<_>) =
                std::mem::take(active).into_iter().partition(finished);
            *active = going;
            for request in done {
                let Request { texts, reply } = request;
                let results = texts
                    .texts
                    .into_iter()
                    .map(|t| classifier.finish(&t?))
                    .collect();
                // The place is free before the answer is: a requester may
                // send its next request at once.
                drop(texts.place);
                let _ = reply.send(Ok(results));
            }
        }
        Err(e) => {
            let message = e.to_string();
            for Request { texts, reply } in active.drain(..) {
                drop(texts);
                let _ = reply.send(Err(Error::Engine(message.clone())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::manifest::tests::write_tiny_pack;

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

    /// Sends `texts` to the worker without waiting for the answer.
    fn send(worker: &Worker, texts: Vec<String>) -> Receiver<Result<Vec<Result<Classification>>>> {
        let (reply, answer) = mpsc::sync_channel(1);
        let texts = worker.prepare(&texts).unwrap();
        worker.submit(Job::Classify { texts, reply }).unwrap();
        answer
    }

    /// One request cannot hold the worker: a short one sent right after a
    /// huge one is served in the next round and answered while the huge one
    /// still runs, and the huge one, run a slice of windows per round, gets
    /// what its texts get alone.
    #[test]
    fn a_short_request_is_answered_while_a_huge_one_still_runs() {
        let dir = tempfile::tempdir().unwrap();
        let worker = tiny_worker(dir.path(), 4);
        // Sixteen notes of some 2500 windows each (windows of 10 tokens):
        // some 200 rounds, so the huge one is still running when the short
        // one's answer is read.
        let note = "fever cough chest pain tumor ".repeat(3000);
        let huge = send(&worker, vec![note.clone(); 16]);
        let short = send(&worker, vec!["chest pain".to_string()]);
        let answer = short.recv().unwrap().unwrap();
        assert!(
            matches!(huge.try_recv(), Err(mpsc::TryRecvError::Empty)),
            "the short request waited for the huge one to finish"
        );
        let direct = worker.classifier().classify("chest pain").unwrap();
        assert_same(answer[0].as_ref().unwrap(), &direct);
        let results = huge.recv().unwrap().unwrap();
        assert_eq!(results.len(), 16);
        let alone = worker.classifier().classify(&note).unwrap();
        assert!(alone.windows > 2000, "{}", alone.windows);
        for result in results {
            assert_same(result.as_ref().unwrap(), &alone);
        }
    }

    /// The same result, up to float rounding (a batch pads windows
    /// differently from a text alone).
    fn assert_same(got: &Classification, alone: &Classification) {
        assert_eq!(got.windows, alone.windows);
        for (a, b) in alone.probabilities.iter().zip(&got.probabilities) {
            assert_eq!(a.id, b.id);
            assert!(
                (a.probability - b.probability).abs() < 1e-5,
                "{a:?} vs {b:?}"
            );
        }
    }

    #[test]
    fn a_full_worker_refuses_more_requests_rather_than_growing() {
        let dir = tempfile::tempdir().unwrap();
        let worker = tiny_worker(dir.path(), 1);
        // A request read but not yet sent holds the only place: another is
        // refused at once, before its texts are read.
        let held = worker.prepare(&["fever"]).unwrap();
        let refused = worker.classify(vec!["fever".into()]);
        assert!(
            matches!(refused, Err(Error::Busy { capacity: 1 })),
            "{refused:?}"
        );
        let evidence = worker.classify_with_evidence("fever".into());
        assert!(matches!(evidence, Err(Error::Busy { .. })), "{evidence:?}");
        // Dropped (a front end refused it, say): the place is free again.
        drop(held);
        assert!(worker.classify(vec!["fever".into()]).unwrap()[0].is_ok());
        // Texts read for one worker are not run by another (whose pack
        // may read them differently).
        let other_dir = tempfile::tempdir().unwrap();
        let other = tiny_worker(other_dir.path(), 1);
        let foreign = other.classify_prepared(worker.prepare(&["fever"]).unwrap());
        assert!(matches!(foreign, Err(Error::Engine(_))), "{foreign:?}");
    }
}
