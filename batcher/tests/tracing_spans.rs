//! The callers' spans are carried into the batch: the batch span follows
//! from each caller's span, and the batch future runs inside it.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use convoy_batcher::{batch_fn, BatchConfig};
use parking_lot::Mutex;
use tower::ServiceExt;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Instrument, Metadata, Subscriber};
use tracing_core::span::Current;

#[derive(Default)]
struct Recorded {
    names: Mutex<Vec<(u64, String)>>,
    metas: Mutex<Vec<(u64, &'static Metadata<'static>)>>,
    follows: Mutex<Vec<(u64, u64)>>,
    entered_in_batch: Mutex<Vec<String>>,
    current: Mutex<Vec<u64>>,
    next: AtomicU64,
}

#[derive(Clone, Default)]
struct Recorder(Arc<Recorded>);

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let id = self.0.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.0
            .names
            .lock()
            .push((id, span.metadata().name().to_owned()));
        self.0.metas.lock().push((id, span.metadata()));
        Id::from_u64(id)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, span: &Id, follows: &Id) {
        self.0
            .follows
            .lock()
            .push((span.into_u64(), follows.into_u64()));
    }
    fn event(&self, event: &Event<'_>) {
        let current = self.0.current.lock().last().copied();
        if let Some(id) = current {
            let names = self.0.names.lock();
            let name = names.iter().find(|(i, _)| *i == id).map(|(_, n)| n.clone());
            if name.as_deref() == Some("convoy_batch") {
                self.0
                    .entered_in_batch
                    .lock()
                    .push(event.metadata().name().to_owned());
            }
        }
    }
    fn enter(&self, span: &Id) {
        self.0.current.lock().push(span.into_u64());
    }
    fn exit(&self, _: &Id) {
        self.0.current.lock().pop();
    }
    fn current_span(&self) -> Current {
        let Some(id) = self.0.current.lock().last().copied() else {
            return Current::none();
        };
        let metas = self.0.metas.lock();
        match metas.iter().find(|(i, _)| *i == id) {
            Some((_, meta)) => Current::new(Id::from_u64(id), meta),
            None => Current::none(),
        }
    }
}

#[test]
fn the_batch_span_follows_from_every_caller() {
    let recorder = Recorder::default();
    let dispatch = tracing::Dispatch::new(recorder.clone());
    tracing::dispatcher::with_default(&dispatch, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let config = BatchConfig::builder().max_batch_size(8).build().unwrap();
            let svc = batch_fn(config, |xs: Vec<u32>| async move {
                tracing::info!("inside the batch");
                Ok::<_, Infallible>(xs)
            });
            let calls = (0..3).map(|i| {
                let svc = svc.clone();
                async move { svc.oneshot(i).await.unwrap() }
                    .instrument(tracing::info_span!("caller", i))
            });
            futures::future::join_all(calls).await;
        });
    });
    let names = recorder.0.names.lock().clone();
    let id_of = |name: &str| -> Vec<u64> {
        names
            .iter()
            .filter(|(_, n)| n == name)
            .map(|(i, _)| *i)
            .collect()
    };
    let callers = id_of("caller");
    let batches = id_of("convoy_batch");
    assert_eq!(callers.len(), 3);
    assert!(!batches.is_empty());
    let follows = recorder.0.follows.lock().clone();
    for c in &callers {
        assert!(
            follows.iter().any(|(b, f)| batches.contains(b) && f == c),
            "caller span {c} not linked: {follows:?}"
        );
    }
    assert!(
        !recorder.0.entered_in_batch.lock().is_empty(),
        "batch future ran outside its span"
    );
}
