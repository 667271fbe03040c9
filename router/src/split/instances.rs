//! A split clone's own backend instances.
//!
//! Most clones serve one request (axum clones the service per request), so
//! the first instance lives inline and only a clone that touches a second
//! backend (spill, overrides) allocates.

use std::collections::HashMap;

use super::table::{Entry, Table};

pub(crate) struct Instances<S> {
    /// (table index, entry id, instance)
    first: Option<(usize, u64, S)>,
    more: Vec<Option<(u64, S)>>,
}

impl<S> Default for Instances<S> {
    fn default() -> Self {
        Self {
            first: None,
            more: Vec::new(),
        }
    }
}

impl<S: Clone> Instances<S> {
    /// This clone's instance of backend `idx`, cloned from the prototype on first use.
    pub(crate) fn get(&mut self, idx: usize, entry: &Entry<S>) -> &mut S {
        let inline = match &self.first {
            None => true,
            Some((i, _, _)) => *i == idx,
        };
        if inline {
            let (_, _, s) = self
                .first
                .get_or_insert_with(|| (idx, entry.id, entry.service.lock().clone()));
            return s;
        }
        if self.more.len() <= idx {
            self.more.resize_with(idx + 1, || None);
        }
        &mut self.more[idx]
            .get_or_insert_with(|| (entry.id, entry.service.lock().clone()))
            .1
    }

    /// Re-indexes the instances for a new table, keeping those whose entry
    /// survived (their readiness is not lost) and dropping the others.
    pub(crate) fn resync(&mut self, table: &Table<S>) {
        let mut old: HashMap<u64, S> = self
            .more
            .drain(..)
            .flatten()
            .chain(self.first.take().map(|(_, id, s)| (id, s)))
            .collect();
        for (idx, entry) in table.entries.iter().enumerate() {
            if let Some(s) = old.remove(&entry.id) {
                if self.first.is_none() {
                    self.first = Some((idx, entry.id, s));
                } else {
                    if self.more.len() <= idx {
                        self.more.resize_with(idx + 1, || None);
                    }
                    self.more[idx] = Some((entry.id, s));
                }
            }
        }
    }
}
