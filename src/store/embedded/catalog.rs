//! The embedded store's read model: every component decoded in memory, in sort-key order per kind, with an index
//! from each needed library to the components that need it.
//!
//! redb stays the source of truth. The catalogue is built from it at start-up and changed after each commit by the
//! writer that committed (writers hold [`Catalog::writer`] across their transaction, so changes are applied in
//! commit order). Readers take a snapshot: persistent maps make a snapshot a few reference counts, so readers never
//! wait for writers and a listing sees one consistent state.

use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use imbl::{HashMap, OrdMap};

use crate::domain::{Component, ComponentFilter, ComponentKey, Kind, Matcher};
use crate::store::{Page, PageRequest};

type Entries = OrdMap<Arc<str>, Arc<Component>>;

/// The components of one kind.
#[derive(Clone, Default)]
struct KindIndex {
    /// Sort key -> component.
    all: Entries,
    /// Library name -> the components that need it.
    by_library: HashMap<String, Entries>,
    /// Library name -> the components whose first needed library (by name) it is: each component is in one of
    /// these or in `no_library`, so the ones a device may run are found without duplicates.
    by_first_library: HashMap<String, Entries>,
    /// Components that need no library.
    no_library: Entries,
}

impl KindIndex {
    fn libraries(component: &Component) -> impl Iterator<Item = &String> {
        component
            .spec
            .needs()
            .into_iter()
            .flat_map(|needs| needs.preinstalled_libraries.keys())
    }

    fn insert(&mut self, component: Arc<Component>) {
        let key: Arc<str> = component.key.sort_key().into();
        if let Some(previous) = self.all.insert(key.clone(), component.clone()) {
            self.unindex(&key, &previous);
        }
        for library in Self::libraries(&component) {
            self.by_library
                .entry(library.clone())
                .or_default()
                .insert(key.clone(), component.clone());
        }
        let first = Self::libraries(&component).next().cloned();
        match first {
            Some(first) => {
                self.by_first_library
                    .entry(first)
                    .or_default()
                    .insert(key, component);
            }
            None => {
                self.no_library.insert(key, component);
            }
        }
    }

    fn remove(&mut self, sort_key: &str) {
        if let Some(previous) = self.all.remove(sort_key) {
            self.unindex(sort_key, &previous);
        }
    }

    fn unindex(&mut self, sort_key: &str, previous: &Component) {
        let forget = |map: &mut HashMap<String, Entries>, library: &str| {
            if let Some(entries) = map.get_mut(library) {
                entries.remove(sort_key);
                if entries.is_empty() {
                    map.remove(library);
                }
            }
        };
        for library in Self::libraries(previous) {
            forget(&mut self.by_library, library);
        }
        match Self::libraries(previous).next() {
            Some(first) => forget(&mut self.by_first_library, first),
            None => {
                self.no_library.remove(sort_key);
            }
        }
    }

    /// The components that may match `filter`, in sort-key order after `after`: a superset of the answer, taken
    /// from the narrowest index the filter allows.
    fn candidates<'a>(
        &'a self,
        filter: &'a ComponentFilter,
        after: Option<&'a str>,
    ) -> Box<dyn Iterator<Item = &'a Arc<Component>> + 'a> {
        let range = |entries: &'a Entries| {
            let from = after.map_or(Bound::Unbounded, Bound::Excluded);
            entries.range::<_, str>((from, Bound::Unbounded))
        };
        if !filter.needs.libraries.is_empty() {
            // Every wanted library is needed: the rarest one's components are the candidates.
            let rarest = filter
                .needs
                .libraries
                .iter()
                .map(|wanted| self.by_library.get(wanted.name.as_str()))
                .min_by_key(|entries| entries.map_or(0, |e| e.len()));
            return match rarest.flatten() {
                Some(entries) => Box::new(range(entries).map(|(_, c)| c)),
                None => Box::new(std::iter::empty()),
            };
        }
        if filter.needs.runnable_on.is_some() {
            let sources = self.runnable_sources(filter).map(range).collect();
            return Box::new(MergeByKey::new(sources));
        }
        Box::new(range(&self.all).map(|(_, c)| c))
    }

    /// For `runnableOn`: a component runs on the device only if the device has every library it needs, so its
    /// first needed library is one of the device's, or it needs none. Each component is in one source at most.
    fn runnable_sources<'a>(
        &'a self,
        filter: &'a ComponentFilter,
    ) -> impl Iterator<Item = &'a Entries> {
        let device = filter.needs.runnable_on.iter();
        device
            .flat_map(|device| device.libraries.keys())
            .filter_map(|name| self.by_first_library.get(name.as_str()))
            .chain(std::iter::once(&self.no_library))
    }
}

/// Merges iterators that are each in sort-key order into one, without duplicates.
struct MergeByKey<'a, I: Iterator<Item = Entry<'a>>> {
    heads: Vec<(Option<Entry<'a>>, I)>,
    last: Option<&'a str>,
}

type Entry<'a> = (&'a Arc<str>, &'a Arc<Component>);

impl<'a, I: Iterator<Item = Entry<'a>>> MergeByKey<'a, I> {
    fn new(sources: Vec<I>) -> Self {
        Self {
            heads: sources.into_iter().map(|mut it| (it.next(), it)).collect(),
            last: None,
        }
    }
}

impl<'a, I: Iterator<Item = Entry<'a>>> Iterator for MergeByKey<'a, I> {
    type Item = &'a Arc<Component>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            // A handful of sources (the device's libraries): a linear minimum beats a heap.
            let (index, (key, component)) = self
                .heads
                .iter()
                .enumerate()
                .filter_map(|(i, (head, _))| head.map(|entry| (i, entry)))
                .min_by(|(_, a), (_, b)| a.0.cmp(b.0))?;
            let (head, rest) = &mut self.heads[index];
            *head = rest.next();
            if self.last == Some(&**key) {
                continue;
            }
            self.last = Some(key);
            return Some(component);
        }
    }
}

/// One consistent state of every kind.
#[derive(Clone, Default)]
pub struct Snapshot {
    kinds: [KindIndex; 4],
}

fn slot(kind: Kind) -> usize {
    match kind {
        Kind::Model => 0,
        Kind::Transformation => 1,
        Kind::Service => 2,
        Kind::Inferencer => 3,
    }
}

impl Snapshot {
    pub fn insert(&mut self, component: Component) {
        self.kinds[slot(component.kind())].insert(Arc::new(component));
    }

    pub fn remove(&mut self, key: &ComponentKey) {
        self.kinds[slot(key.kind())].remove(&key.sort_key());
    }

    pub fn get(&self, key: &ComponentKey) -> Option<&Arc<Component>> {
        self.kinds[slot(key.kind())]
            .all
            .get(key.sort_key().as_str())
    }

    /// Up to `limit` components of `kind` after the sort key `after`, in order.
    pub fn range(&self, kind: Kind, after: Option<&str>, limit: usize) -> Vec<Arc<Component>> {
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.kinds[slot(kind)]
            .all
            .range::<_, str>((from, Bound::Unbounded))
            .take(limit)
            .map(|(_, c)| c.clone())
            .collect()
    }

    /// One page of a listing: O(log n + page) when matches are frequent among the candidates; the count, when
    /// asked for, is one more pass over the candidates (or free when nothing is filtered).
    pub fn list(&self, kind: Kind, filter: &ComponentFilter, page: &PageRequest) -> Page {
        let index = &self.kinds[slot(kind)];
        let mut matcher = filter.matcher();
        let mut items: Vec<Component> = index
            .candidates(filter, page.after.as_deref())
            .filter(|c| matcher.matches(c))
            .take(page.limit + 1)
            .map(|c| Component::clone(c))
            .collect();
        let has_next = items.len() > page.limit;
        items.truncate(page.limit);
        let total = page
            .count
            .then(|| count(index, filter, &mut matcher) as u64);
        Page {
            items,
            has_next,
            total,
        }
    }
}

fn count(index: &KindIndex, filter: &ComponentFilter, matcher: &mut Matcher<'_>) -> usize {
    if *filter == ComponentFilter::default() {
        return index.all.len();
    }
    if filter.needs.runnable_on.is_some() && filter.needs.libraries.is_empty() {
        // The sources are disjoint: a count needs no merge into key order.
        return index
            .runnable_sources(filter)
            .map(|entries| entries.values().filter(|c| matcher.matches(c)).count())
            .sum();
    }
    index
        .candidates(filter, None)
        .filter(|c| matcher.matches(c))
        .count()
}

/// The shared read model: a published snapshot, and the writer's lock.
#[derive(Default)]
pub struct Catalog {
    published: ArcSwap<Snapshot>,
    writer: Mutex<()>,
}

/// Held by a writer from before its transaction begins until its change is published.
pub struct Writer<'a> {
    catalog: &'a Catalog,
    _lock: MutexGuard<'a, ()>,
}

impl Writer<'_> {
    /// Publishes a change made by a transaction that has committed.
    pub fn publish(&self, change: impl FnOnce(&mut Snapshot)) {
        let mut next = Snapshot::clone(&self.catalog.published.load());
        change(&mut next);
        self.catalog.published.store(Arc::new(next));
    }
}

impl Catalog {
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.published.load_full()
    }

    /// Serialises writers, so that changes are published in commit order.
    pub fn writer(&self) -> Writer<'_> {
        Writer {
            catalog: self,
            // A writer that panicked left the published snapshot whole: each publish is one atomic swap.
            _lock: self.writer.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }
}
