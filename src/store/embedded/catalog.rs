//! The embedded store's read model: every component in memory as its stored record plus a compact [`Summary`],
//! in sort-key order per kind, with an index from each needed library to the components that need it. Filters on
//! needs and counts read summaries only; a record is decoded when it is returned (or when a text search needs it),
//! which keeps a million components in well under a gigabyte and lets the load skip building them.
//!
//! redb stays the source of truth. The catalogue is built from it at start-up and changed after each commit by the
//! writer that committed (writers hold [`Catalog::writer`] across their transaction, so changes are applied in
//! commit order). Readers take a snapshot: persistent maps make a snapshot a few reference counts, so readers never
//! wait for writers and a listing sees one consistent state.

use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use imbl::HashMap;

use super::decode;
use super::layered::LayeredMap;
use super::summary::{Cache, Cached, Summary, SummaryMatcher, Sym, Symbols, summary_only};
use crate::domain::{Component, ComponentFilter, ComponentKey, Kind, Matcher, Needs};
use crate::store::{Page, PageRequest, StoreError};

/// One component: its record as stored (self-describing, so records written by older versions stay readable) and
/// what filters read. Each index holds its own copy of the summary beside the shared record, so that filters and
/// counts read summaries where the index keeps them, without a pointer to follow per component.
#[derive(Clone)]
pub struct Item {
    record: Arc<[u8]>,
    summary: Summary,
}

impl Item {
    pub fn component(&self) -> Result<Component, StoreError> {
        decode(&self.record)
    }
}

type Entries = LayeredMap<Item>;

/// The components of one kind.
#[derive(Clone, Default)]
struct KindIndex {
    /// Sort key -> component.
    all: Entries,
    /// Library name -> the components that need it.
    by_library: HashMap<Sym, Entries>,
    /// Library name -> the components whose first needed library (by name) it is: each component is in one of
    /// these or in `no_library`, so the ones a device may run are found without duplicates.
    by_first_library: HashMap<Sym, Entries>,
    /// Components that need no library.
    no_library: Entries,
}

impl KindIndex {
    fn insert(&mut self, symbols: &Symbols, key: Arc<str>, item: Item) {
        if let Some(previous) = self.all.insert(key.clone(), item.clone()) {
            self.unindex(symbols, &key, &previous);
        }
        for library in item.summary.libraries(symbols) {
            self.by_library
                .entry(library)
                .or_default()
                .insert(key.clone(), item.clone());
        }
        let first = item.summary.libraries(symbols).next();
        match first {
            Some(first) => {
                self.by_first_library
                    .entry(first)
                    .or_default()
                    .insert(key, item);
            }
            None => {
                self.no_library.insert(key, item);
            }
        }
    }

    fn remove(&mut self, symbols: &Symbols, sort_key: &str) {
        if let Some(previous) = self.all.remove(sort_key) {
            self.unindex(symbols, sort_key, &previous);
        }
    }

    fn unindex(&mut self, symbols: &Symbols, sort_key: &str, previous: &Item) {
        let forget = |map: &mut HashMap<Sym, Entries>, library: Sym| {
            if let Some(entries) = map.get_mut(&library) {
                entries.remove(sort_key);
                if entries.is_empty() {
                    map.remove(&library);
                }
            }
        };
        for library in previous.summary.libraries(symbols) {
            forget(&mut self.by_library, library);
        }
        match previous.summary.libraries(symbols).next() {
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
        symbols: &Symbols,
        filter: &'a ComponentFilter,
        after: Option<&'a str>,
    ) -> Box<dyn Iterator<Item = &'a Item> + 'a> {
        let range = |entries: &'a Entries| entries.range(after);
        if !filter.needs.libraries.is_empty() {
            // Every wanted library is needed: the rarest one's components are the candidates.
            let rarest = filter
                .needs
                .libraries
                .iter()
                .map(|wanted| {
                    symbols
                        .get(&wanted.name)
                        .and_then(|name| self.by_library.get(&name))
                })
                .min_by_key(|entries| entries.map_or(0, |e| e.len()));
            return match rarest.flatten() {
                Some(entries) => Box::new(range(entries).map(|(_, c)| c)),
                None => Box::new(std::iter::empty()),
            };
        }
        if filter.needs.runnable_on.is_some() {
            let sources = self.runnable_sources(symbols, filter).map(range).collect();
            return Box::new(MergeByKey::new(sources));
        }
        Box::new(range(&self.all).map(|(_, c)| c))
    }

    /// For `runnableOn`: a component runs on the device only if the device has every library it needs, so its
    /// first needed library is one of the device's, or it needs none. Each component is in one source at most.
    fn runnable_sources<'a>(
        &'a self,
        symbols: &Symbols,
        filter: &ComponentFilter,
    ) -> impl Iterator<Item = &'a Entries> {
        let device = filter.needs.runnable_on.iter();
        let names: Vec<Sym> = device
            .flat_map(|device| device.libraries.keys())
            .filter_map(|name| symbols.get(name))
            .collect();
        names
            .into_iter()
            .filter_map(|name| self.by_first_library.get(&name))
            .chain(std::iter::once(&self.no_library))
    }
}

/// Merges iterators that are each in sort-key order into one, without duplicates.
struct MergeByKey<'a, I: Iterator<Item = Entry<'a>>> {
    heads: Vec<(Option<Entry<'a>>, I)>,
    last: Option<&'a str>,
}

type Entry<'a> = (&'a Arc<str>, &'a Item);

impl<'a, I: Iterator<Item = Entry<'a>>> MergeByKey<'a, I> {
    fn new(sources: Vec<I>) -> Self {
        Self {
            heads: sources.into_iter().map(|mut it| (it.next(), it)).collect(),
            last: None,
        }
    }
}

impl<'a, I: Iterator<Item = Entry<'a>>> Iterator for MergeByKey<'a, I> {
    type Item = &'a Item;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            // A handful of sources (the device's libraries): a linear minimum beats a heap.
            let (index, (key, item)) = self
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
            return Some(item);
        }
    }
}

/// One consistent state of every kind.
#[derive(Clone, Default)]
pub struct Snapshot {
    kinds: [KindIndex; 4],
    symbols: Symbols,
}

fn slot(kind: Kind) -> usize {
    match kind {
        Kind::Model => 0,
        Kind::Transformation => 1,
        Kind::Service => 2,
        Kind::Inferencer => 3,
    }
}

/// A filter prepared for one listing: from summaries when it allows, else from decoded components.
enum Test<'a> {
    /// Summaries, but a device is matched against the decoded component when its builds state needs of their
    /// own (the summary holds the component's needs only).
    Summary(SummaryMatcher<'a>, Option<Box<Matcher<'a>>>),
    Component(Matcher<'a>),
}

impl<'a> Test<'a> {
    fn new(symbols: &'a Symbols, filter: &'a ComponentFilter) -> Self {
        if summary_only(filter) {
            let by_build = filter
                .needs
                .runnable_on
                .is_some()
                .then(|| Box::new(filter.matcher()));
            Test::Summary(SummaryMatcher::new(symbols, &filter.needs), by_build)
        } else {
            Test::Component(filter.matcher())
        }
    }

    fn matches(&mut self, item: &Item) -> Result<bool, StoreError> {
        match self {
            Test::Summary(_, Some(by_build)) if item.summary.builds_differ => {
                Ok(by_build.matches(&item.component()?))
            }
            Test::Summary(matcher, _) => Ok(matcher.matches(&item.summary)),
            Test::Component(matcher) => Ok(matcher.matches(&item.component()?)),
        }
    }
}

impl Snapshot {
    /// Adds or replaces a component: its key, its needs (None for models) and its encoded record.
    pub fn insert(
        &mut self,
        key: &ComponentKey,
        needs: Option<&Needs>,
        builds_differ: bool,
        record: Arc<[u8]>,
    ) {
        let summary = Summary::new(&mut self.symbols, needs, builds_differ);
        let item = Item { record, summary };
        self.kinds[slot(key.kind())].insert(&self.symbols, key.sort_key().into(), item);
    }

    pub fn remove(&mut self, key: &ComponentKey) {
        self.kinds[slot(key.kind())].remove(&self.symbols, &key.sort_key());
    }

    pub fn get(&self, key: &ComponentKey) -> Result<Option<Component>, StoreError> {
        self.kinds[slot(key.kind())]
            .all
            .get(&key.sort_key())
            .map(|item| item.component())
            .transpose()
    }

    /// Up to `limit` components of `kind` after the sort key `after`, in order, with their sort keys.
    pub fn range(&self, kind: Kind, after: Option<&str>, limit: usize) -> Vec<(Arc<str>, Item)> {
        self.kinds[slot(kind)]
            .all
            .range(after)
            .take(limit)
            .map(|(key, item)| (key.clone(), item.clone()))
            .collect()
    }

    /// One page of a listing: O(log n + page) when matches are frequent among the candidates; the count, when
    /// asked for, is one more pass over the candidates' summaries (or free when nothing is filtered).
    pub fn list(
        &self,
        kind: Kind,
        filter: &ComponentFilter,
        page: &PageRequest,
    ) -> Result<Page, StoreError> {
        let index = &self.kinds[slot(kind)];
        let mut test = Test::new(&self.symbols, filter);
        let mut items = Vec::with_capacity(page.limit.min(1024) + 1);
        for item in index.candidates(&self.symbols, filter, page.after.as_deref()) {
            if items.len() > page.limit {
                break;
            }
            if test.matches(item)? {
                items.push(item.component()?);
            }
        }
        let has_next = items.len() > page.limit;
        items.truncate(page.limit);
        let total = match page.count {
            true => Some(self.count(index, filter, &mut test)? as u64),
            false => None,
        };
        Ok(Page {
            items,
            has_next,
            total,
        })
    }

    fn count(
        &self,
        index: &KindIndex,
        filter: &ComponentFilter,
        test: &mut Test<'_>,
    ) -> Result<usize, StoreError> {
        let mut count = 0;
        let mut tally = |items: &mut dyn Iterator<Item = &Item>| {
            for item in items {
                count += usize::from(test.matches(item)?);
            }
            Ok::<_, StoreError>(())
        };
        if *filter == ComponentFilter::default() {
            return Ok(index.all.len());
        }
        if filter.needs.runnable_on.is_some() && filter.needs.libraries.is_empty() {
            // The sources are disjoint: a count needs no merge into key order.
            for entries in index.runnable_sources(&self.symbols, filter) {
                tally(&mut entries.values())?;
            }
        } else {
            tally(&mut index.candidates(&self.symbols, filter, None))?;
        }
        Ok(count)
    }
}

/// Builds a snapshot in one pass from components given in sort-key order within each kind, as redb returns them:
/// every index is an array pushed in order (see [`LayeredMap`]).
#[derive(Default)]
pub struct Builder {
    symbols: Symbols,
    cache: Cache,
    kinds: [KindBuilder; 4],
}

type Sorted = Vec<(Arc<str>, Item)>;

#[derive(Default)]
struct KindBuilder {
    all: Sorted,
    by_library: std::collections::HashMap<Sym, Sorted>,
    by_first_library: std::collections::HashMap<Sym, Sorted>,
    no_library: Sorted,
}

impl Builder {
    /// Adds a component of `kind` whose sort key is greater than those added before for that kind.
    pub fn push(
        &mut self,
        kind: Kind,
        sort_key: Arc<str>,
        needs: Option<&Needs>,
        builds_differ: bool,
        record: Arc<[u8]>,
    ) {
        let mut symbols = Cached {
            symbols: &mut self.symbols,
            cache: &mut self.cache,
        };
        let summary = Summary::new(&mut symbols, needs, builds_differ);
        let item = Item { record, summary };
        let index = &mut self.kinds[slot(kind)];
        let mut libraries = symbols
            .pairs(summary.library_list())
            .iter()
            .map(|(name, _)| *name);
        match libraries.next() {
            Some(first) => {
                let entry = (sort_key.clone(), item.clone());
                index
                    .by_first_library
                    .entry(first)
                    .or_default()
                    .push(entry.clone());
                index.by_library.entry(first).or_default().push(entry);
            }
            None => index.no_library.push((sort_key.clone(), item.clone())),
        }
        for library in libraries {
            let entry = (sort_key.clone(), item.clone());
            index.by_library.entry(library).or_default().push(entry);
        }
        index.all.push((sort_key, item));
    }

    pub fn finish(self) -> Snapshot {
        let maps = |lists: std::collections::HashMap<Sym, Sorted>| {
            lists
                .into_iter()
                .map(|(library, entries)| (library, LayeredMap::from_sorted(entries)))
                .collect()
        };
        Snapshot {
            kinds: self.kinds.map(|index| KindIndex {
                all: LayeredMap::from_sorted(index.all),
                by_library: maps(index.by_library),
                by_first_library: maps(index.by_first_library),
                no_library: LayeredMap::from_sorted(index.no_library),
            }),
            symbols: self.symbols,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Device, LibraryWanted, NeedsFilter, ServiceSpec, Spec};
    use proptest::prelude::*;

    const LIBRARIES: [&str; 3] = ["tensorflow", "numpy", "torch"];
    const REQUIREMENTS: [&str; 3] = [">=2.12", "*", "1.26.4"];

    fn service(id: u16, ram: u8, libraries: &[(usize, usize)]) -> (ComponentKey, Needs, Arc<[u8]>) {
        let key = ComponentKey::with_id(Kind::Service, format!("svc.{id:05}")).unwrap();
        let needs = Needs {
            ram: Some(f64::from(ram)),
            preinstalled_libraries: libraries
                .iter()
                .map(|&(l, r)| (LIBRARIES[l].to_string(), REQUIREMENTS[r].to_string()))
                .collect(),
            ..Needs::default()
        };
        let spec = Spec::Service(ServiceSpec {
            description: format!("service {id}"),
            needs: needs.clone(),
        });
        let component = Component::new(key.clone(), spec, crate::domain::now()).unwrap();
        let record = super::super::encode(&component).unwrap();
        (key, needs, record.into())
    }

    fn filters() -> Vec<ComponentFilter> {
        let needs = |needs: NeedsFilter| ComponentFilter {
            needs,
            ..ComponentFilter::default()
        };
        let device = Device {
            gpu_memory: None,
            gpu: false,
            ram: Some(4.0),
            storage: None,
            libraries: [("tensorflow".to_string(), "2.13.0".to_string())].into(),
            models: Vec::new(),
            platform: None,
        };
        vec![
            ComponentFilter::default(),
            needs(NeedsFilter {
                max_ram: Some(2.0),
                ..NeedsFilter::default()
            }),
            needs(NeedsFilter {
                libraries: vec![LibraryWanted {
                    name: "tensorflow".into(),
                    version: Some(">=2".into()),
                }],
                ..NeedsFilter::default()
            }),
            needs(NeedsFilter {
                runnable_on: Some(device),
                ..NeedsFilter::default()
            }),
        ]
    }

    /// Every page of every filter, with its count, as ids.
    fn answers(snapshot: &Snapshot) -> Vec<(Vec<String>, Option<u64>)> {
        let mut all = Vec::new();
        for filter in filters() {
            let mut after = None;
            loop {
                let page = PageRequest {
                    after: after.clone(),
                    limit: 7,
                    count: true,
                };
                let page = snapshot.list(Kind::Service, &filter, &page).unwrap();
                let ids: Vec<String> = page.items.iter().map(|c| c.key.sort_key()).collect();
                after = ids.last().cloned();
                all.push((ids, page.total));
                if !page.has_next {
                    break;
                }
            }
        }
        all
    }

    fn component() -> impl Strategy<Value = (u16, u8, Vec<(usize, usize)>)> {
        (
            0..400u16,
            0..8u8,
            prop::collection::vec((0..LIBRARIES.len(), 0..REQUIREMENTS.len()), 0..3),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
        /// The cold start builds the catalogue in bulk; writes change it one component at a time. Both answer every
        /// listing and count alike, before and after the same changes.
        #[test]
        fn a_bulk_built_snapshot_answers_like_one_built_by_inserts(
            loaded in prop::collection::btree_map(0..400u16, component(), 0..150),
            changes in prop::collection::vec((any::<bool>(), component()), 0..100),
        ) {
            let mut builder = Builder::default();
            let mut inserted = Snapshot::default();
            for (id, (_, ram, libraries)) in &loaded {
                let (key, needs, record) = service(*id, *ram, libraries);
                builder.push(
                    Kind::Service,
                    key.sort_key().into(),
                    Some(&needs),
                    false,
                    record.clone(),
                );
                inserted.insert(&key, Some(&needs), false, record);
            }
            let mut built = builder.finish();
            prop_assert_eq!(answers(&built), answers(&inserted));
            for (remove, (id, ram, libraries)) in &changes {
                let (key, needs, record) = service(*id, *ram, libraries);
                for snapshot in [&mut built, &mut inserted] {
                    match remove {
                        true => snapshot.remove(&key),
                        false => snapshot.insert(&key, Some(&needs), false, record.clone()),
                    }
                }
            }
            prop_assert_eq!(answers(&built), answers(&inserted));
        }
    }
}
