//! What is checked of a GraphQL document before and after it is parsed, whichever transport carried it: how deep
//! its brackets nest (the parser recurses on them) and how many aliases it runs.

use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};

use crate::service::ServiceError;

/// Counts the aliased fields an operation runs, each fragment as often as it is spread.
pub fn alias_count(document: &ExecutableDocument) -> usize {
    use std::collections::HashMap;

    /// Aliases of `set` as it runs: a fragment counts each time it is spread. Each fragment is counted once and
    /// remembered; a spread that cycles back counts nothing here (validation refuses it).
    fn count<'d>(
        set: &'d SelectionSet,
        document: &'d ExecutableDocument,
        known: &mut HashMap<&'d str, Option<usize>>,
    ) -> usize {
        set.items
            .iter()
            .map(|item| match &item.node {
                Selection::Field(field) => usize::from(field.node.alias.is_some())
                    .saturating_add(count(&field.node.selection_set.node, document, known)),
                Selection::InlineFragment(fragment) => {
                    count(&fragment.node.selection_set.node, document, known)
                }
                Selection::FragmentSpread(spread) => {
                    let name = spread.node.fragment_name.node.as_str();
                    match known.get(name) {
                        Some(Some(n)) => *n,
                        Some(None) => 0, // a cycle
                        None => {
                            known.insert(name, None);
                            let n = document
                                .fragments
                                .get(&spread.node.fragment_name.node)
                                .map_or(0, |f| count(&f.node.selection_set.node, document, known));
                            known.insert(name, Some(n));
                            n
                        }
                    }
                }
            })
            .fold(0, usize::saturating_add)
    }
    let mut known = HashMap::new();
    document
        .operations
        .iter()
        .map(|(_, op)| count(&op.node.selection_set.node, document, &mut known))
        .fold(0, usize::saturating_add)
}

/// Deepest nesting of brackets (`[`, `{`, `(`) a GraphQL document may have. async-graphql's parser recurses once
/// per level, so a few thousand levels in a few kilobytes would overflow the stack: documents are measured before
/// they are parsed. Far above what the depth limit lets a real operation use.
pub const MAX_DOCUMENT_NESTING: usize = 64;

/// Refuses a GraphQL document that nests brackets deeper than [`MAX_DOCUMENT_NESTING`], without parsing it: a
/// linear scan that skips strings, block strings and comments, where brackets do not count.
pub fn check_nesting(document: &str) -> Result<(), ServiceError> {
    let bytes = document.as_bytes();
    let (mut depth, mut i) = (0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                    // `\"""` is the one escape of a block string.
                    i += if bytes[i..].starts_with(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'[' | b'{' | b'(' => {
                depth += 1;
                if depth > MAX_DOCUMENT_NESTING {
                    return Err(ServiceError::InvalidInput(format!(
                        "the GraphQL document nests brackets more than {MAX_DOCUMENT_NESTING} levels deep"
                    )));
                }
            }
            b']' | b'}' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_are_counted_in_operations_and_fragments() {
        let document = async_graphql::parser::parse_query(
            "{ a: services { totalCount } b: services { c: totalCount } ...F } fragment F on QueryRoot { d: models { totalCount } }",
        )
        .unwrap();
        assert_eq!(alias_count(&document), 4);
    }

    #[test]
    fn a_fragment_counts_its_aliases_each_time_it_is_spread() {
        let fields = |prefix: &str, field: &str| {
            (0..15)
                .map(|i| format!("{prefix}{i}: {field} "))
                .collect::<String>()
        };
        let document = async_graphql::parser::parse_query(format!(
            "{{ ...F }} fragment F on QueryRoot {{ {} }} fragment G on ServiceConnection {{ {} }}",
            fields("s", "services { ...G }"),
            fields("t", "totalCount")
        ))
        .unwrap();
        assert_eq!(alias_count(&document), 15 + 15 * 15);
        let cycle = async_graphql::parser::parse_query(
            "{ ...A } fragment A on QueryRoot { a: lastSequence ...A }",
        )
        .unwrap();
        assert_eq!(alias_count(&cycle), 1);
    }

    #[test]
    fn deep_documents_are_refused_before_parsing() {
        let deep = |open: &str, close: &str, n: usize| {
            format!(
                "{{ services(filter: {}) {{ totalCount }} }}",
                open.repeat(n) + &close.repeat(n)
            )
        };
        assert!(check_nesting(&deep("[", "]", 10)).is_ok());
        assert!(check_nesting(&deep("[", "]", 5_000)).is_err());
        assert!(check_nesting(&deep("{a: ", "}", 5_000)).is_err());
        // Brackets in strings, block strings and comments are text, not nesting.
        let text = "[".repeat(5_000);
        for quoted in [
            format!("\"{text}\\\"{text}\""),
            format!("\"\"\"{text}\\\"\"\"{text}\"\"\""),
            format!("# {text}\n"),
        ] {
            let document =
                format!("query {{ services(filter: {{ text: {quoted} }}) {{ totalCount }} }}");
            assert!(check_nesting(&document).is_ok(), "{document:.40}");
        }
        // An unterminated string or block string ends the scan without a panic.
        assert!(check_nesting("{ a(b: \"[[[").is_ok());
        assert!(check_nesting("{ a(b: \"\"\"[[[\\").is_ok());
    }

    #[test]
    fn the_deepest_accepted_document_parses_on_a_small_stack() {
        let n = MAX_DOCUMENT_NESTING - 2;
        let document = format!("{{ a(b: {}1{}) }}", "[".repeat(n), "]".repeat(n));
        assert!(check_nesting(&document).is_ok());
        let parsed = std::thread::Builder::new()
            .stack_size(1024 * 1024)
            .spawn(move || async_graphql::parser::parse_query(&document).is_ok())
            .unwrap()
            .join()
            .unwrap();
        assert!(parsed);
    }
}
