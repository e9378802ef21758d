//! A persistent ordered map that can be built in bulk: a sorted array, built in one pass when the catalogue loads
//! and shared by every snapshot, plus a persistent map of the changes made since, merged with it when read.
//!
//! imbl's ordered map has no bulk build: a million components inserted one at a time into the catalogue's indexes
//! took seconds of the cold start, while pushing them into arrays in the order redb returns them takes
//! milliseconds. Changes stay cheap to snapshot (the array is shared, the changes are an imbl map) and are folded
//! into a new array once they are a sixteenth of it, so that reads never merge with a large change set.

use std::cmp::Ordering;
use std::iter::Peekable;
use std::ops::Bound;
use std::sync::Arc;

use imbl::OrdMap;

/// Changes below this many are never folded in: small maps live in their change set.
const FOLD_AT_LEAST: usize = 1024;

#[derive(Clone)]
pub struct LayeredMap<V: Clone> {
    /// Sorted by key, each key once.
    base: Arc<Vec<(Arc<str>, V)>>,
    /// Changes since `base` was built: `Some` put, `None` removed from `base`.
    changes: OrdMap<Arc<str>, Option<V>>,
    len: usize,
}

impl<V: Clone> Default for LayeredMap<V> {
    fn default() -> Self {
        Self {
            base: Arc::default(),
            changes: OrdMap::new(),
            len: 0,
        }
    }
}

impl<V: Clone> LayeredMap<V> {
    /// A map of `entries`, which are in ascending key order with each key once.
    pub fn from_sorted(entries: Vec<(Arc<str>, V)>) -> Self {
        debug_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
        Self {
            len: entries.len(),
            base: Arc::new(entries),
            changes: OrdMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        match self.changes.get(key) {
            Some(change) => change.as_ref(),
            None => self.in_base(key).map(|i| &self.base[i].1),
        }
    }

    fn in_base(&self, key: &str) -> Option<usize> {
        self.base.binary_search_by(|(k, _)| (**k).cmp(key)).ok()
    }

    /// Puts `value` under `key`, returning the value it replaces.
    pub fn insert(&mut self, key: Arc<str>, value: V) -> Option<V> {
        let previous = self.get(&key).cloned();
        if previous.is_none() {
            self.len += 1;
        }
        self.changes.insert(key, Some(value));
        self.fold_when_large();
        previous
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<V> {
        let previous = self.get(key).cloned()?;
        self.len -= 1;
        match self.in_base(key) {
            Some(i) => {
                let key = self.base[i].0.clone();
                self.changes.insert(key, None);
            }
            None => {
                self.changes.remove(key);
            }
        }
        self.fold_when_large();
        Some(previous)
    }

    /// The entries with keys after `after` (all of them for `None`), in key order.
    pub fn range<'a>(&'a self, after: Option<&str>) -> Range<'a, V> {
        let start = after.map_or(0, |after| self.base.partition_point(|(k, _)| &**k <= after));
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        Range {
            base: self.base[start..].iter().peekable(),
            changes: self
                .changes
                .range::<_, str>((from, Bound::Unbounded))
                .peekable(),
        }
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.range(None).map(|(_, v)| v)
    }

    fn fold_when_large(&mut self) {
        if self.changes.len() > FOLD_AT_LEAST.max(self.base.len() / 16) {
            let merged: Vec<_> = self
                .range(None)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            *self = Self::from_sorted(merged);
        }
    }
}

type Changes<'a, V> =
    imbl::ordmap::RangedIter<'a, Arc<str>, Option<V>, imbl::shared_ptr::DefaultSharedPtr>;

/// The merge of the base array and the changes, the changes winning on equal keys.
pub struct Range<'a, V: Clone> {
    base: Peekable<std::slice::Iter<'a, (Arc<str>, V)>>,
    changes: Peekable<Changes<'a, V>>,
}

impl<'a, V: Clone> Iterator for Range<'a, V> {
    type Item = (&'a Arc<str>, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let order = match (self.base.peek(), self.changes.peek()) {
                (None, None) => return None,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some((base, _)), Some((changed, _))) => base.cmp(changed),
            };
            if order == Ordering::Less {
                return self.base.next().map(|(k, v)| (k, v));
            }
            if order == Ordering::Equal {
                self.base.next();
            }
            if let Some((key, Some(value))) = self.changes.next() {
                return Some((key, value));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16, u32),
        Remove(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..3000u16, any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            (0..3000u16).prop_map(Op::Remove),
        ]
    }

    fn key(k: u16) -> String {
        format!("k{k:05}")
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        /// Whatever was loaded and changed since (enough changes to fold several times), the map answers like a
        /// BTreeMap given the same entries and changes, and an older copy keeps its own state.
        #[test]
        fn answers_like_a_btree_map(
            loaded in prop::collection::btree_map(0..3000u16, any::<u32>(), 0..2000),
            ops in prop::collection::vec(op(), 0..4000),
            after in prop::option::of(0..3000u16),
        ) {
            let mut expected: BTreeMap<String, u32> = loaded.iter().map(|(k, v)| (key(*k), *v)).collect();
            let mut map = LayeredMap::from_sorted(
                expected.iter().map(|(k, v)| (Arc::<str>::from(k.as_str()), *v)).collect(),
            );
            let before = map.clone();
            let before_expected = expected.clone();
            for op in &ops {
                match *op {
                    Op::Insert(k, v) => {
                        prop_assert_eq!(map.insert(key(k).into(), v), expected.insert(key(k), v));
                    }
                    Op::Remove(k) => prop_assert_eq!(map.remove(&key(k)), expected.remove(&key(k))),
                }
                prop_assert_eq!(map.len(), expected.len());
            }
            for (map, expected) in [(&map, &expected), (&before, &before_expected)] {
                let after = after.map(key);
                let got: Vec<(String, u32)> =
                    map.range(after.as_deref()).map(|(k, v)| (k.to_string(), *v)).collect();
                let want: Vec<(String, u32)> = expected
                    .iter()
                    .filter(|(k, _)| after.as_ref().is_none_or(|a| *k > a))
                    .map(|(k, v)| (k.clone(), *v))
                    .collect();
                prop_assert_eq!(got, want);
                for k in (0..3000).step_by(7) {
                    prop_assert_eq!(map.get(&key(k)), expected.get(&key(k)));
                }
                prop_assert_eq!(map.len(), expected.len());
            }
        }
    }
}
