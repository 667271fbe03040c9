use std::fmt;
use std::sync::Arc;

use super::service::Control;
use super::table::{Entry, Table};
use crate::error::{check_weight, ConfigError, ConfigErrorKind};
use crate::stats::{BackendSnapshot, SplitSnapshot};

/// Changes a split's weights and backends at run time.
///
/// An update builds a new routing table and swaps it in whole: every clone
/// of the split sees it before its next pick. Requests already dispatched
/// are unaffected.
pub struct SplitHandle<S> {
    control: Arc<Control<S>>,
}

impl<S> Clone for SplitHandle<S> {
    fn clone(&self) -> Self {
        Self {
            control: self.control.clone(),
        }
    }
}

impl<S> fmt::Debug for SplitHandle<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SplitHandle")
            .field("split", &self.control.name)
            .field("table", &*self.control.current())
            .finish()
    }
}

impl<S: Clone> SplitHandle<S> {
    pub(crate) fn new(control: Arc<Control<S>>) -> Self {
        Self { control }
    }

    fn update(
        &self,
        f: impl FnOnce(&Table<S>) -> Result<Vec<Entry<S>>, ConfigError>,
    ) -> Result<(), ConfigError> {
        let _writer = self.control.writer.lock();
        let current = self.control.current();
        let entries = f(&current)?;
        let table = Table::build(current.epoch + 1, entries, self.control.sticky)?;
        self.control.install(table);
        Ok(())
    }

    /// Sets the weights of the named backends; the others keep theirs.
    /// The whole update is rejected if a name is unknown, a weight invalid,
    /// or all weights would be zero.
    pub fn set_weights<I, N>(&self, weights: I) -> Result<(), ConfigError>
    where
        I: IntoIterator<Item = (N, f64)>,
        N: AsRef<str>,
    {
        let weights: Vec<(N, f64)> = weights.into_iter().collect();
        self.update(|table| {
            for (name, w) in &weights {
                let name = name.as_ref();
                check_weight(name, *w)?;
                if table.index_of(name).is_none() {
                    return Err(unknown(name));
                }
            }
            Ok(table
                .entries
                .iter()
                .map(|e| {
                    let w = weights
                        .iter()
                        .rev()
                        .find(|(n, _)| n.as_ref() == &*e.name)
                        .map_or(e.weight, |(_, w)| *w);
                    e.with_weight(w)
                })
                .collect())
        })
    }

    /// Sets one backend's weight.
    pub fn set_weight(&self, name: &str, weight: f64) -> Result<(), ConfigError> {
        self.set_weights([(name, weight)])
    }

    /// Adds a backend. Fails if the name is taken.
    pub fn insert_backend(
        &self,
        name: impl Into<String>,
        service: S,
        weight: f64,
    ) -> Result<(), ConfigError> {
        let name = name.into();
        self.update(|table| {
            let mut entries: Vec<Entry<S>> = table
                .entries
                .iter()
                .map(|e| e.with_weight(e.weight))
                .collect();
            entries.push(self.control.new_entry(&name, service, weight));
            Ok(entries)
        })
    }

    /// Removes a backend; requests already sent to it complete normally.
    pub fn remove_backend(&self, name: &str) -> Result<(), ConfigError> {
        self.update(|table| {
            if table.index_of(name).is_none() {
                return Err(unknown(name));
            }
            Ok(table
                .entries
                .iter()
                .filter(|e| &*e.name != name)
                .map(|e| e.with_weight(e.weight))
                .collect())
        })
    }

    /// Current weights, in table order.
    pub fn weights(&self) -> Vec<(String, f64)> {
        self.control
            .current()
            .entries
            .iter()
            .map(|e| (e.name.to_string(), e.weight))
            .collect()
    }
}

impl<S> SplitHandle<S> {
    /// Counters of every backend.
    pub fn snapshot(&self) -> SplitSnapshot {
        let table = self.control.current();
        SplitSnapshot {
            split: self.control.name.to_string(),
            backends: table
                .entries
                .iter()
                .map(|e| e.stats.snapshot(e.weight))
                .collect(),
        }
    }

    /// Counters of one backend.
    pub fn backend(&self, name: &str) -> Option<BackendSnapshot> {
        let table = self.control.current();
        let e = &table.entries[table.index_of(name)?];
        Some(e.stats.snapshot(e.weight))
    }
}

fn unknown(name: &str) -> ConfigError {
    ConfigError::new(
        ConfigErrorKind::UnknownBackend,
        format!("no backend named `{name}`"),
    )
}
