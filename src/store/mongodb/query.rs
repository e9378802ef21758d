//! Listing filters as MongoDB queries.
//!
//! The database narrows a listing by everything a query can express exactly: text search, names, libraries, GPU,
//! RAM and storage bounds, which libraries and models are needed, and for `runnableOn` that every needed library
//! and model is one the device has. PEP 440 version comparisons are not expressible as a query: for those the
//! query is a superset of the answer and the store applies the domain's own filter to each candidate as it streams
//! past; [`Pushdown::exact`] says which case applies.

use mongodb::bson::{Bson, Document, doc};

use crate::domain::{ComponentFilter, ComponentKey, Kind, NeedsFilter};

pub struct Pushdown {
    pub query: Document,
    /// True when the query selects exactly the components the filter matches.
    pub exact: bool,
}

/// A case-insensitive `$regex` condition matching `text` literally, anchored or as a substring.
fn literal_regex(text: &str, anchored: bool) -> Document {
    let escaped = regex_escape(text);
    let pattern = if anchored {
        format!("^{escaped}$")
    } else {
        escaped
    };
    doc! { "$regex": pattern, "$options": "i" }
}

fn regex_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\^$.|?*+()[]{}-/#".contains(c) || c.is_whitespace() {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// Whether a user-given map key can be used inside a field path: dots would address a sub-field and a leading `$`
/// an operator.
fn safe_path_segment(name: &str) -> bool {
    !name.contains('.') && !name.starts_with('$')
}

/// `field <= max`, where an absent or null field counts as 0.
fn at_most(field: &str, max: f64) -> Document {
    if max >= 0.0 {
        // `$in: [null]` matches null and absent fields, like `field: null`, which some MongoDB-compatible servers
        // mishandle inside `$or`.
        doc! { "$or": [ { field: { "$lte": max } }, { field: { "$in": [Bson::Null] } } ] }
    } else {
        doc! { field: { "$lte": max } }
    }
}

fn needs_clauses(needs: &NeedsFilter, clauses: &mut Vec<Document>) -> bool {
    let mut exact = true;
    match needs.gpu {
        Some(true) => clauses.push(doc! { "needs.GPU": true }),
        Some(false) => clauses.push(doc! { "needs.GPU": { "$ne": true } }),
        None => {}
    }
    if let Some(max) = needs.max_ram {
        clauses.push(at_most("needs.RAM", max));
    }
    if let Some(max) = needs.max_storage {
        clauses.push(at_most("needs.storage", max));
    }
    for library in &needs.libraries {
        if safe_path_segment(&library.name) {
            let field = format!("needs.preinstalled_libraries.{}", library.name);
            clauses.push(doc! { field: { "$exists": true } });
        } else {
            exact = false;
        }
        // A wanted version is compared with the needed range as PEP 440 versions, outside the database.
        exact &= library.version.is_none();
    }
    for model in &needs.models {
        if safe_path_segment(&model.name) {
            let field = format!("needs.available_models.{}", model.name);
            match &model.version {
                Some(version) => clauses.push(doc! { field: version }),
                None => clauses.push(doc! { field: { "$exists": true } }),
            }
        } else {
            exact = false;
        }
    }
    if let Some(device) = &needs.runnable_on {
        // A component whose builds state needs of their own may run on a build lighter than the component's
        // figures: those are let through and judged build by build with the rest.
        let or_builds = |clause: Document| {
            doc! { "$or": [clause, { "variants.needs": { "$exists": true } }] }
        };
        if !device.gpu {
            clauses.push(or_builds(doc! { "needs.GPU": { "$ne": true } }));
        }
        if let Some(ram) = device.ram {
            clauses.push(or_builds(at_most("needs.RAM", ram)));
        }
        if let Some(gpu_memory) = device.gpu_memory {
            clauses.push(or_builds(at_most("needs.gpu_memory", gpu_memory)));
        }
        if let Some(storage) = device.storage {
            clauses.push(or_builds(at_most("needs.storage", storage)));
        }
        // Every library and model the component needs is one the device has, by name; versions are compared per
        // candidate.
        let libraries: Vec<&String> = device.libraries.keys().collect();
        clauses.push(names_within("$needs.preinstalled_libraries", libraries));
        let models: Vec<&String> = device.models.iter().map(|(name, _)| name).collect();
        clauses.push(names_within("$needs.available_models", models));
        exact = false;
    }
    exact
}

/// The keys of the map at `path` (absent or null: none) are all among `names`. Map keys are data, not field paths,
/// so this takes an expression; documents the original service wrote have the same maps. `$objectToArray` and
/// `$map` give null for an absent or null map, which `$ifNull` turns into no keys.
fn names_within(path: &str, names: Vec<&String>) -> Document {
    doc! { "$expr": { "$setIsSubset": [
        { "$ifNull": [
            { "$map": { "input": { "$objectToArray": path }, "as": "entry", "in": "$$entry.k" } },
            [],
        ] },
        names,
    ] } }
}

/// The query for `filter` on `kind`, and whether it is exact.
pub fn pushdown(kind: Kind, filter: &ComponentFilter) -> Pushdown {
    let mut clauses = Vec::new();
    if let Some(search) = &filter.search {
        let pattern = literal_regex(search, false);
        let fields: &[&str] = match kind {
            Kind::Model => &["model_name", "model_version", "meta.description"],
            _ => &["id", "description"],
        };
        let alternatives: Vec<Document> = fields
            .iter()
            .map(|field| doc! { *field: pattern.clone() })
            .collect();
        clauses.push(doc! { "$or": alternatives });
    }
    if let Some(name) = &filter.name {
        clauses.push(doc! { "model_name": name });
    }
    if let Some(library) = &filter.library {
        let field = match kind {
            Kind::Model => "meta.library",
            _ => "library",
        };
        clauses.push(doc! { field: literal_regex(library, true) });
    }
    let exact = needs_clauses(&filter.needs, &mut clauses);
    Pushdown {
        query: and(clauses),
        exact,
    }
}

/// Components after `after` in listing order (see [`sort_order`]).
pub fn after(after: &ComponentKey) -> Document {
    match after {
        ComponentKey::Model(m) => doc! { "$or": [
            { "model_name": { "$gt": &m.name } },
            { "model_name": &m.name, "model_version": { "$gt": &m.version } },
        ] },
        ComponentKey::Transformation { id }
        | ComponentKey::Service { id }
        | ComponentKey::Inferencer { id } => doc! { "id": { "$gt": id } },
    }
}

/// Listing order: by id, models by name then version; the same order as the embedded store's sort keys.
pub fn sort_order(kind: Kind) -> Document {
    match kind {
        Kind::Model => doc! { "model_name": 1, "model_version": 1 },
        _ => doc! { "id": 1 },
    }
}

pub fn and(mut clauses: Vec<Document>) -> Document {
    match clauses.len() {
        0 => Document::new(),
        1 => clauses.pop().unwrap_or_default(),
        _ => doc! { "$and": clauses },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Device, LibraryWanted};

    #[test]
    fn search_text_is_taken_literally() {
        assert_eq!(regex_escape("a.b*(c)"), "a\\.b\\*\\(c\\)");
        let Pushdown { query, exact } = pushdown(
            Kind::Service,
            &ComponentFilter {
                search: Some("svc.x".into()),
                ..ComponentFilter::default()
            },
        );
        assert!(exact);
        assert!(query.to_string().contains(r#""svc\.x""#), "{query}");
    }

    #[test]
    fn version_ranges_and_devices_are_checked_outside_the_database() {
        let mut filter = ComponentFilter::default();
        filter.needs.libraries.push(LibraryWanted {
            name: "tensorflow".into(),
            version: None,
        });
        assert!(pushdown(Kind::Service, &filter).exact);
        filter.needs.libraries[0].version = Some(">=2".into());
        assert!(!pushdown(Kind::Service, &filter).exact);

        let device = ComponentFilter {
            needs: NeedsFilter {
                runnable_on: Some(Device::default()),
                ..NeedsFilter::default()
            },
            ..ComponentFilter::default()
        };
        assert!(!pushdown(Kind::Service, &device).exact);
    }

    #[test]
    fn devices_exclude_components_needing_what_they_lack_in_the_query() {
        let device = Device {
            libraries: [("tensorflow".to_string(), "2.13.1".to_string())].into(),
            models: vec![("yolo".into(), "v8".into())],
            ..Device::default()
        };
        let filter = ComponentFilter {
            needs: NeedsFilter {
                runnable_on: Some(device),
                ..NeedsFilter::default()
            },
            ..ComponentFilter::default()
        };
        let Pushdown { query, exact } = pushdown(Kind::Service, &filter);
        assert!(!exact, "versions are still compared per candidate");
        let text = query.to_string();
        assert!(text.contains("$setIsSubset"), "{text}");
        assert!(text.contains(r#"["tensorflow"]"#), "{text}");
        assert!(text.contains(r#"["yolo"]"#), "{text}");
    }

    #[test]
    fn library_names_with_dots_are_not_field_paths() {
        let mut filter = ComponentFilter::default();
        filter.needs.libraries.push(LibraryWanted {
            name: "zope.interface".into(),
            version: None,
        });
        let Pushdown { query, exact } = pushdown(Kind::Service, &filter);
        assert!(!exact);
        assert!(query.is_empty());
    }
}
