//! What the catalogue keeps of each component to filter and count without decoding it: its needs and names as
//! small numbers (interned text, and interned lists of library and model pairs), tested by a matcher that asks the
//! domain's rules once per distinct text and remembers its verdict once per distinct list.

use std::sync::Arc;

use foldhash::HashMap;

use crate::domain::{ComponentFilter, Device, LibraryWanted, Needs, NeedsFilter};

/// An interned text (library names, requirements, model names and versions repeat across a catalogue), or an
/// interned list of (name, text) pairs: the libraries or the models of a component.
pub type Sym = u32;

/// (name, requirement) or (name, version) pairs, in name order.
type Pairs = Arc<[(Sym, Sym)]>;

/// Every distinct text and list of pairs the summaries refer to, in both directions. They are never forgotten:
/// their number grows with the distinct names, requirements and combinations ever stored, not with the components.
#[derive(Clone, Default)]
pub struct Symbols {
    ids: imbl::HashMap<Arc<str>, Sym>,
    texts: imbl::Vector<Arc<str>>,
    list_ids: imbl::HashMap<Pairs, Sym>,
    lists: imbl::Vector<Pairs>,
}

impl Symbols {
    pub fn intern(&mut self, text: &str) -> Sym {
        if let Some(id) = self.ids.get(text) {
            return *id;
        }
        let id = self.texts.len() as Sym;
        let text: Arc<str> = text.into();
        self.texts.push_back(text.clone());
        self.ids.insert(text, id);
        id
    }

    pub fn get(&self, text: &str) -> Option<Sym> {
        self.ids.get(text).copied()
    }

    fn text(&self, id: Sym) -> &str {
        self.texts.get(id as usize).map_or("", |t| t)
    }

    fn intern_list(&mut self, pairs: &[(Sym, Sym)]) -> Sym {
        if let Some(id) = self.list_ids.get(pairs) {
            return *id;
        }
        let id = self.lists.len() as Sym;
        let pairs: Pairs = pairs.into();
        self.lists.push_back(pairs.clone());
        self.list_ids.insert(pairs, id);
        id
    }

    /// The pairs of an interned list.
    pub fn list(&self, id: Sym) -> &[(Sym, Sym)] {
        self.lists.get(id as usize).map_or(&[], |l| l)
    }
}

/// Where summaries get their numbers from: the [`Symbols`] themselves, or a [`Cached`] view for bulk builds.
pub trait Intern {
    fn text_id(&mut self, text: &str) -> Sym;
    fn list_id(&mut self, pairs: &[(Sym, Sym)]) -> Sym;
}

impl Intern for Symbols {
    fn text_id(&mut self, text: &str) -> Sym {
        self.intern(text)
    }

    fn list_id(&mut self, pairs: &[(Sym, Sym)]) -> Sym {
        self.intern_list(pairs)
    }
}

/// Plain hash maps in front of the persistent ones while a million summaries are built at start-up: probing imbl's
/// maps for every text of every component was most of the cold start.
#[derive(Default)]
pub struct Cache {
    texts: HashMap<Box<str>, Sym>,
    lists: HashMap<Box<[(Sym, Sym)]>, Sym>,
    /// The lists by id, for the builder to index components by library without asking imbl.
    by_id: Vec<Pairs>,
}

/// [`Symbols`] behind a [`Cache`].
pub struct Cached<'a> {
    pub symbols: &'a mut Symbols,
    pub cache: &'a mut Cache,
}

impl Cached<'_> {
    /// The pairs of list `id`.
    pub fn pairs(&self, id: Sym) -> &[(Sym, Sym)] {
        match self.cache.by_id.get(id as usize) {
            Some(pairs) => pairs,
            None => self.symbols.list(id),
        }
    }
}

impl Intern for Cached<'_> {
    fn text_id(&mut self, text: &str) -> Sym {
        if let Some(id) = self.cache.texts.get(text) {
            return *id;
        }
        let id = self.symbols.intern(text);
        self.cache.texts.insert(text.into(), id);
        id
    }

    fn list_id(&mut self, pairs: &[(Sym, Sym)]) -> Sym {
        if let Some(id) = self.cache.lists.get(pairs) {
            return *id;
        }
        let id = self.symbols.intern_list(pairs);
        self.cache.lists.insert(pairs.into(), id);
        let cached = &mut self.cache.by_id;
        if cached.len() == id as usize {
            cached.push(self.symbols.lists[id as usize].clone());
        }
        id
    }
}

/// The fields of a component that needs filters read: 40 bytes, no pointer, so that a count reads them in place.
#[derive(Clone, Copy)]
pub struct Summary {
    /// Transformations, services and inferencers have needs; models do not.
    has_needs: bool,
    gpu: bool,
    /// Some per-platform build states needs of its own: a device is matched build by build, from the component.
    pub builds_differ: bool,
    gpu_memory: f64,
    /// An absent figure counts as 0, as in [`NeedsFilter`] and [`Device`].
    ram: f64,
    storage: f64,
    /// The interned list of (name, requirement), in name order (the order of the component's map).
    libraries: Sym,
    /// The interned list of (name, version), in name order.
    models: Sym,
}

impl Summary {
    pub fn new(symbols: &mut impl Intern, needs: Option<&Needs>, builds_differ: bool) -> Self {
        let mut pairs = |map: &std::collections::BTreeMap<String, String>| {
            // Components need a few libraries: no allocation for up to four.
            let mut pairs = [(0, 0); 4];
            let mut more = Vec::new();
            for (i, (name, text)) in map.iter().enumerate() {
                let pair = (symbols.text_id(name), symbols.text_id(text));
                match pairs.get_mut(i) {
                    Some(slot) => *slot = pair,
                    None => more.push(pair),
                }
            }
            if more.is_empty() {
                symbols.list_id(&pairs[..map.len()])
            } else {
                more.splice(0..0, pairs);
                symbols.list_id(&more)
            }
        };
        match needs {
            Some(needs) => Self {
                has_needs: true,
                gpu: needs.gpu,
                builds_differ,
                gpu_memory: needs.gpu_memory.unwrap_or(0.0),
                ram: needs.ram.unwrap_or(0.0),
                storage: needs.storage.unwrap_or(0.0),
                libraries: pairs(&needs.preinstalled_libraries),
                models: pairs(&needs.available_models),
            },
            None => {
                let none = symbols.list_id(&[]);
                Self {
                    has_needs: false,
                    gpu: false,
                    builds_differ,
                    gpu_memory: 0.0,
                    ram: 0.0,
                    storage: 0.0,
                    libraries: none,
                    models: none,
                }
            }
        }
    }

    /// The libraries the component needs, in name order.
    pub fn libraries<'a>(&self, symbols: &'a Symbols) -> impl Iterator<Item = Sym> + 'a {
        symbols.list(self.libraries).iter().map(|(name, _)| *name)
    }

    /// The interned list of the component's libraries.
    pub fn library_list(&self) -> Sym {
        self.libraries
    }
}

/// Whether a filter can be answered from summaries alone: search, model name, library and a device platform need the
/// component.
pub fn summary_only(filter: &ComponentFilter) -> bool {
    // A device's platform is matched against the component's files, which summaries do not hold.
    let platform = filter
        .needs
        .runnable_on
        .as_ref()
        .is_some_and(|device| device.platform.is_some());
    filter.search.is_none() && filter.name.is_none() && filter.library.is_none() && !platform
}

/// A [`NeedsFilter`] applied to summaries, with the same answers as [`NeedsFilter::matches`]: each comparison of
/// texts is made by the domain's own function, once per distinct pair in a listing, and the verdict on a whole list
/// of libraries or models once per distinct list, so that testing a component costs a few comparisons and two
/// array reads.
pub struct SummaryMatcher<'a> {
    symbols: &'a Symbols,
    needs: &'a NeedsFilter,
    empty: bool,
    /// Per wanted library: its name (None: no component needs it) and the verdict per requirement.
    libraries: Vec<(Option<Sym>, &'a LibraryWanted, Verdicts)>,
    /// Per wanted model: its name and the version wanted (outer None: any; inner None: a version no component
    /// names).
    models: Vec<(Option<Sym>, Option<Option<Sym>>)>,
    device: Option<DeviceVerdicts<'a>>,
    /// Verdicts per interned list id: 0 not yet known, 1 rejected, 2 accepted.
    library_lists: Vec<u8>,
    model_lists: Vec<u8>,
}

struct DeviceVerdicts<'a> {
    device: &'a Device,
    libraries: Verdicts,
    models: Verdicts,
}

type Verdicts = HashMap<u64, bool>;

fn pair(a: Sym, b: Sym) -> u64 {
    (u64::from(a) << 32) | u64::from(b)
}

/// The remembered verdict on list `id`, computed by `decide` the first time.
fn remembered(verdicts: &mut Vec<u8>, id: Sym, decide: impl FnOnce() -> bool) -> bool {
    let id = id as usize;
    if id >= verdicts.len() {
        // Grown as ids are met (amortised doubling), so that a short page allocates little.
        verdicts.resize(id + 1, 0);
    }
    let slot = &mut verdicts[id];
    if *slot == 0 {
        *slot = 1 + u8::from(decide());
    }
    *slot == 2
}

impl<'a> SummaryMatcher<'a> {
    pub fn new(symbols: &'a Symbols, needs: &'a NeedsFilter) -> Self {
        Self {
            symbols,
            needs,
            empty: needs.is_empty(),
            libraries: needs
                .libraries
                .iter()
                .map(|wanted| (symbols.get(&wanted.name), wanted, Verdicts::default()))
                .collect(),
            models: needs
                .models
                .iter()
                .map(|wanted| {
                    let version = wanted.version.as_deref().map(|v| symbols.get(v));
                    (symbols.get(&wanted.name), version)
                })
                .collect(),
            device: needs.runnable_on.as_ref().map(|device| DeviceVerdicts {
                device,
                libraries: Verdicts::default(),
                models: Verdicts::default(),
            }),
            library_lists: Vec::new(),
            model_lists: Vec::new(),
        }
    }

    pub fn matches(&mut self, summary: &Summary) -> bool {
        if !summary.has_needs {
            return self.empty;
        }
        let needs = self.needs;
        let at_most = |need: f64, max: Option<f64>| max.is_none_or(|max| need <= max);
        if needs.gpu.is_some_and(|gpu| summary.gpu != gpu)
            || !at_most(summary.ram, needs.max_ram)
            || !at_most(summary.storage, needs.max_storage)
        {
            return false;
        }
        if let Some(device) = &self.device {
            let device = device.device;
            let fits = |need: f64, has: Option<f64>| has.is_none_or(|has| need <= has);
            if (summary.gpu && !device.gpu)
                || !fits(summary.ram, device.ram)
                || !fits(summary.gpu_memory, device.gpu_memory)
                || !fits(summary.storage, device.storage)
            {
                return false;
            }
        }
        let symbols = self.symbols;
        let (libraries, device) = (&mut self.libraries, &mut self.device);
        // The list is looked up only the first time its id is met: most candidates cost an array read.
        if !remembered(&mut self.library_lists, summary.libraries, || {
            let list = symbols.list(summary.libraries);
            wanted_libraries(symbols, libraries, list)
                && device
                    .as_mut()
                    .is_none_or(|on| device_libraries(symbols, on, list))
        }) {
            return false;
        }
        let (models, device) = (&self.models, &mut self.device);
        remembered(&mut self.model_lists, summary.models, || {
            let list = symbols.list(summary.models);
            wanted_models(models, list)
                && device
                    .as_mut()
                    .is_none_or(|on| device_models(symbols, on, list))
        })
    }
}

/// Every wanted library is in `list`, with a requirement that accepts the wanted version.
fn wanted_libraries(
    symbols: &Symbols,
    wanted: &mut [(Option<Sym>, &LibraryWanted, Verdicts)],
    list: &[(Sym, Sym)],
) -> bool {
    wanted.iter_mut().all(|(name, wanted, verdicts)| {
        let Some(name) = *name else { return false };
        let Some(&(_, required)) = list.iter().find(|(n, _)| *n == name) else {
            return false;
        };
        wanted.version.is_none()
            || *verdicts
                .entry(u64::from(required))
                .or_insert_with(|| wanted.accepts(symbols.text(required)))
    })
}

/// Every wanted model is in `list`, with the wanted version when one is given.
fn wanted_models(wanted: &[(Option<Sym>, Option<Option<Sym>>)], list: &[(Sym, Sym)]) -> bool {
    wanted.iter().all(|(name, version)| {
        let Some(name) = *name else { return false };
        let Some(&(_, present)) = list.iter().find(|(n, _)| *n == name) else {
            return false;
        };
        version.is_none_or(|version| version == Some(present))
    })
}

/// The device has every library of `list` in a version its requirement accepts.
fn device_libraries(symbols: &Symbols, on: &mut DeviceVerdicts<'_>, list: &[(Sym, Sym)]) -> bool {
    let device = on.device;
    list.iter().all(|&(name, required)| {
        *on.libraries
            .entry(pair(name, required))
            .or_insert_with(|| device.has_library(symbols.text(name), symbols.text(required)))
    })
}

/// The device has every model of `list`.
fn device_models(symbols: &Symbols, on: &mut DeviceVerdicts<'_>, list: &[(Sym, Sym)]) -> bool {
    let device = on.device;
    list.iter().all(|&(name, version)| {
        *on.models
            .entry(pair(name, version))
            .or_insert_with(|| device.has_model(symbols.text(name), symbols.text(version)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ModelWanted;
    use proptest::prelude::*;

    fn pick(items: &'static [&'static str]) -> impl Strategy<Value = String> {
        (0..items.len()).prop_map(move |i| items[i].to_string())
    }

    fn figure() -> impl Strategy<Value = Option<f64>> {
        prop::option::of(prop::sample::select(vec![0.0, 0.5, 2.0, 8.0]))
    }

    const LIBRARIES: [&str; 3] = ["tensorflow", "numpy", "torch"];
    const REQUIREMENTS: [&str; 6] = ["2.13.0", ">=2.12", "*", "", "latest", "==1.*"];
    const VERSIONS: [&str; 4] = ["v8", "v5", "*", ""];

    fn needs() -> impl Strategy<Value = Needs> {
        (
            figure(),
            figure(),
            any::<bool>(),
            prop::collection::btree_map(pick(&LIBRARIES), pick(&REQUIREMENTS), 0..3),
            prop::collection::btree_map(pick(&["yolo", "bert"]), pick(&VERSIONS), 0..2),
        )
            .prop_map(|(storage, ram, gpu, libraries, models)| Needs {
                gpu_memory: ram.map(|gb| gb * 3.0),
                storage,
                ram,
                gpu,
                preinstalled_libraries: libraries,
                available_models: models,
            })
    }

    fn device() -> impl Strategy<Value = Device> {
        (
            any::<bool>(),
            figure(),
            figure(),
            prop::collection::btree_map(
                pick(&LIBRARIES),
                pick(&["2.13.0", "1.26.4", "latest"]),
                0..3,
            ),
            prop::collection::vec((pick(&["yolo", "bert"]), pick(&["v8", "v5"])), 0..3),
        )
            .prop_map(|(gpu, ram, storage, libraries, models)| Device {
                gpu_memory: ram.map(|gb| gb * 2.0),
                gpu,
                ram,
                storage,
                libraries,
                models,
                platform: None,
            })
    }

    fn filter() -> impl Strategy<Value = NeedsFilter> {
        (
            prop::option::of(any::<bool>()),
            figure(),
            figure(),
            prop::collection::vec(
                (
                    pick(&["tensorflow", "numpy", "jax"]),
                    prop::option::of(pick(&[">=2", "<2", "latest", "*"])),
                ),
                0..2,
            ),
            prop::collection::vec(
                (
                    pick(&["yolo", "bert", "gpt"]),
                    prop::option::of(pick(&["v8", "v1", "*"])),
                ),
                0..2,
            ),
            prop::option::of(device()),
        )
            .prop_map(
                |(gpu, max_ram, max_storage, libraries, models, runnable_on)| NeedsFilter {
                    gpu,
                    max_ram,
                    max_storage,
                    libraries: libraries
                        .into_iter()
                        .map(|(name, version)| LibraryWanted { name, version })
                        .collect(),
                    models: models
                        .into_iter()
                        .map(|(name, version)| ModelWanted { name, version })
                        .collect(),
                    runnable_on,
                },
            )
    }

    proptest! {
        #[test]
        fn summaries_answer_like_the_domain_filter(
            catalogue in prop::collection::vec(prop::option::of(needs()), 1..20),
            filter in filter(),
        ) {
            let mut symbols = Symbols::default();
            let summaries: Vec<Summary> = catalogue
                .iter()
                .map(|needs| Summary::new(&mut symbols, needs.as_ref(), false))
                .collect();
            let mut matcher = SummaryMatcher::new(&symbols, &filter);
            for (needs, summary) in catalogue.iter().zip(&summaries) {
                let expected = match needs {
                    Some(needs) => filter.matches(needs),
                    None => filter.is_empty(),
                };
                prop_assert_eq!(matcher.matches(summary), expected, "{:?} / {:?}", needs, filter);
            }
        }
    }
}
