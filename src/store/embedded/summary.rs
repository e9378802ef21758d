//! What the catalogue keeps of each component to filter and count without decoding it: its needs and names as
//! small numbers (interned text), tested by a matcher that asks the domain's rules once per distinct text.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use crate::domain::{ComponentFilter, Device, LibraryWanted, Needs, NeedsFilter};

/// An interned text: library names, requirements, model names and versions repeat across a catalogue.
pub type Sym = u32;

/// Every distinct text the summaries refer to, in both directions. Texts are never forgotten: their number grows
/// with the distinct names and requirements ever stored, not with the components.
#[derive(Clone, Default)]
pub struct Symbols {
    ids: imbl::HashMap<Arc<str>, Sym>,
    texts: imbl::Vector<Arc<str>>,
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
}

/// The fields of a component that needs filters read, compact and in one allocation's reach.
pub struct Summary {
    /// Transformations, services and inferencers have needs; models do not.
    has_needs: bool,
    gpu: bool,
    /// An absent figure counts as 0, as in [`NeedsFilter`] and [`Device`].
    ram: f64,
    storage: f64,
    /// (name, requirement), in name order (the order of the component's map).
    libraries: Box<[(Sym, Sym)]>,
    /// (name, version), in name order.
    models: Box<[(Sym, Sym)]>,
}

impl Summary {
    pub fn new(symbols: &mut Symbols, needs: Option<&Needs>) -> Self {
        let mut pairs = |map: &std::collections::BTreeMap<String, String>| {
            map.iter()
                .map(|(name, text)| (symbols.intern(name), symbols.intern(text)))
                .collect::<Box<[_]>>()
        };
        match needs {
            Some(needs) => Self {
                has_needs: true,
                gpu: needs.gpu,
                ram: needs.ram.unwrap_or(0.0),
                storage: needs.storage.unwrap_or(0.0),
                libraries: pairs(&needs.preinstalled_libraries),
                models: pairs(&needs.available_models),
            },
            None => Self {
                has_needs: false,
                gpu: false,
                ram: 0.0,
                storage: 0.0,
                libraries: Box::new([]),
                models: Box::new([]),
            },
        }
    }

    /// The libraries the component needs, in name order.
    pub fn libraries(&self) -> impl Iterator<Item = Sym> + '_ {
        self.libraries.iter().map(|(name, _)| *name)
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
/// texts is made by the domain's own function, once per distinct pair in a listing.
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
}

struct DeviceVerdicts<'a> {
    device: &'a Device,
    libraries: Verdicts,
    models: Verdicts,
}

type Verdicts = HashMap<u64, bool, BuildHasherDefault<SymHasher>>;

/// Keys of verdicts are one or two symbols: a multiplication spreads them well enough, far cheaper than SipHash.
#[derive(Default)]
pub struct SymHasher(u64);

impl Hasher for SymHasher {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.write_u64(u64::from(*byte));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

fn pair(a: Sym, b: Sym) -> u64 {
    (u64::from(a) << 32) | u64::from(b)
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
        let symbols = self.symbols;
        for (name, wanted, verdicts) in &mut self.libraries {
            let Some(name) = *name else { return false };
            let Some(&(_, required)) = summary.libraries.iter().find(|(n, _)| *n == name) else {
                return false;
            };
            if wanted.version.is_some()
                && !*verdicts
                    .entry(u64::from(required))
                    .or_insert_with(|| wanted.accepts(symbols.text(required)))
            {
                return false;
            }
        }
        for (name, version) in &self.models {
            let Some(name) = *name else { return false };
            let Some(&(_, present)) = summary.models.iter().find(|(n, _)| *n == name) else {
                return false;
            };
            if version.is_some_and(|version| version != Some(present)) {
                return false;
            }
        }
        match &mut self.device {
            None => true,
            Some(on) => {
                let device = on.device;
                (!summary.gpu || device.gpu)
                    && device.ram.is_none_or(|has| summary.ram <= has)
                    && device.storage.is_none_or(|has| summary.storage <= has)
                    && summary.libraries.iter().all(|&(name, required)| {
                        *on.libraries.entry(pair(name, required)).or_insert_with(|| {
                            device.has_library(symbols.text(name), symbols.text(required))
                        })
                    })
                    && summary.models.iter().all(|&(name, version)| {
                        *on.models.entry(pair(name, version)).or_insert_with(|| {
                            device.has_model(symbols.text(name), symbols.text(version))
                        })
                    })
            }
        }
    }
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
                .map(|needs| Summary::new(&mut symbols, needs.as_ref()))
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
