//! How library versions match.
//!
//! ML libraries are Python packages, so versions and ranges follow PEP 440 (`2.12.0`, `2.1.0+cu118`,
//! `>=2.12,<3`, `~=1.13`, `==2.*`). A requirement is read as follows:
//! - empty or `*`: any version of the library;
//! - a plain version `V`: the same as `==V`; PEP 440 pads with zeros (`2.12` equals `2.12.0`) and ignores the
//!   installed version's local label (`2.1.0` is satisfied by `2.1.0+cu118`);
//! - a specifier set (`>=2.12,<3`): every clause must hold;
//! - anything else (not PEP 440, e.g. `latest`): satisfied only by exactly the same text.

use std::str::FromStr;

use pep440_rs::{Version, VersionSpecifier, VersionSpecifiers};
use version_ranges::Ranges;

/// A library requirement of a component.
///
/// ```
/// use component_repository::domain::version::Requirement;
///
/// let range = Requirement::parse(">=2.12,<3");
/// assert!(range.is_satisfied_by("2.15.1"));
/// assert!(!range.is_satisfied_by("2.9.0")); // compared as versions, not strings
///
/// let pinned = Requirement::parse("2.1.0");
/// assert!(pinned.is_satisfied_by("2.1.0+cu118")); // local labels are ignored
/// assert!(!pinned.is_satisfied_by("2.1.1"));
/// ```
#[derive(Debug, Clone)]
pub enum Requirement {
    Any,
    Specifiers(VersionSpecifiers),
    Verbatim(String),
}

impl Requirement {
    pub fn parse(text: &str) -> Self {
        let text = text.trim();
        if text.is_empty() || text == "*" {
            return Requirement::Any;
        }
        if let Ok(version) = Version::from_str(text) {
            return Requirement::Specifiers(VersionSpecifier::equals_version(version).into());
        }
        match VersionSpecifiers::from_str(text) {
            Ok(specifiers) => Requirement::Specifiers(specifiers),
            Err(_) => Requirement::Verbatim(text.to_owned()),
        }
    }

    /// Does an installed version satisfy this requirement?
    pub fn is_satisfied_by(&self, installed: &str) -> bool {
        let installed = installed.trim();
        match self {
            Requirement::Any => true,
            Requirement::Specifiers(specifiers) => Version::from_str(installed)
                .map(|version| specifiers.contains(&version))
                .unwrap_or(false),
            Requirement::Verbatim(text) => text == installed,
        }
    }
}

/// Refuses a requirement that begins like a PEP 440 specifier (with `<`, `>`, `=`, `!` or `~`) but does not parse
/// as one (`>=>=2`, `==`, `>=2,,<3`): no device could ever satisfy it. The reason names the clause and its
/// position (the 1-based character where it starts). Other text (`latest`, `2.12.0`) is accepted as the original
/// service's clients send it.
///
/// ```
/// use component_repository::domain::version::check_requirement;
///
/// assert!(check_requirement(">=2.12,<3").is_ok());
/// assert!(check_requirement("latest").is_ok());
/// assert_eq!(
///     check_requirement(">=2,,<3").unwrap_err(),
///     "an empty clause at character 5: a PEP 440 specifier set is clauses such as `>=2.12` separated by commas"
/// );
/// ```
pub fn check_requirement(text: &str) -> Result<(), String> {
    let trimmed = text.trim_start();
    if !trimmed.starts_with(['<', '>', '=', '!', '~']) || VersionSpecifiers::from_str(text).is_ok()
    {
        return Ok(());
    }
    let mut start = text.len() - trimmed.len();
    for clause in trimmed.split(',') {
        let position = text[..start].chars().count() + 1;
        let written = clause.trim();
        if written.is_empty() {
            return Err(format!(
                "an empty clause at character {position}: a PEP 440 specifier set is clauses such as `>=2.12` \
                 separated by commas"
            ));
        }
        if let Err(e) = VersionSpecifier::from_str(written) {
            let position = position + (clause.len() - clause.trim_start().len());
            return Err(format!(
                "{written:?} at character {position} is not a PEP 440 version clause: {e}"
            ));
        }
        start += clause.len() + 1;
    }
    Err(format!("{text:?} is not a PEP 440 specifier set"))
}

/// Does a component's requirement `required` fall within what a search asks for (`wanted`)? They match when some
/// version would satisfy both:
/// - a search for any version (empty or `*`) matches every requirement, and a component that accepts any version
///   matches every search;
/// - a pinned version (`2.13.0`) matches a range that accepts it, in either direction;
/// - two ranges match when they overlap (`>=2.12` and `>=2.0,<3` do, `>=3` and `<2` do not), with PEP 440's
///   rules at the bounds (`<3` excludes `3.0rc1`, `>2` excludes `2.0.post1`, `==2.*` is `>=2.dev0,<3.dev0`);
/// - text that is not PEP 440 (`latest`) matches only the same text.
///
/// ```
/// use component_repository::domain::version::requirement_matches;
///
/// assert!(requirement_matches("2.13.0", ">=2.12,<3"));
/// assert!(requirement_matches(">=2.12", "2.13.0"));
/// assert!(!requirement_matches("3.0.0", ">=2.12,<3"));
/// assert!(requirement_matches("*", ">=2"));
/// assert!(requirement_matches(">=2.12", ">=2.0,<3"));
/// assert!(!requirement_matches(">=3", "<2"));
/// assert!(requirement_matches("~=2.12", "==2.*"));
/// ```
pub fn requirement_matches(required: &str, wanted: &str) -> bool {
    let wanted = Requirement::parse(wanted);
    let required = Requirement::parse(required);
    match (&required, &wanted) {
        (Requirement::Any, _) | (_, Requirement::Any) => true,
        (Requirement::Verbatim(a), Requirement::Verbatim(b)) => a == b,
        (Requirement::Verbatim(_), _) | (_, Requirement::Verbatim(_)) => false,
        (Requirement::Specifiers(a), Requirement::Specifiers(b)) => overlap(a, b),
    }
}

/// Whether two components' requirements on one library exclude each other: both are PEP 440 specifier sets and no
/// version satisfies both. Literal text (`latest`) conflicts with nothing, as nothing is known of it.
pub fn requirements_conflict(a: &str, b: &str) -> bool {
    match (Requirement::parse(a), Requirement::parse(b)) {
        (Requirement::Specifiers(a), Requirement::Specifiers(b)) => !overlap(&a, &b),
        _ => false,
    }
}

/// Whether some version satisfies both specifier sets.
fn overlap(a: &VersionSpecifiers, b: &VersionSpecifiers) -> bool {
    let has_local = |set: &VersionSpecifiers| set.iter().any(|s| s.version().is_local());
    if has_local(a) || has_local(b) {
        // Local labels (`+cu118`) are ignored by some operators and not by others, which intervals cannot express;
        // the versions the sets name are the only candidates worth trying.
        return a
            .iter()
            .chain(b.iter())
            .any(|s| a.contains(s.version()) && b.contains(s.version()));
    }
    let a: Ranges<Version> = a.clone().into();
    let b: Ranges<Version> = b.clone().into();
    !a.is_disjoint(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_that_begin_like_specifiers_must_parse_and_say_where_they_do_not() {
        for good in [
            ">=2.12,<3",
            "==2.*",
            "~=1.13",
            "!=2.0",
            " >=2 , <3",
            "latest",
            "2.12.0",
            "",
            "*",
            "cu118",
        ] {
            assert_eq!(check_requirement(good), Ok(()), "{good:?}");
        }
        for (bad, at) in [
            (">=>=2", "character 1"),
            ("==", "character 1"),
            (">=2,,<3", "character 5"),
            (">=2, <x", "character 6"),
        ] {
            let reason = check_requirement(bad).expect_err(bad);
            assert!(reason.contains(at), "{bad:?}: {reason}");
        }
    }

    #[test]
    fn plain_versions_are_exact_but_compared_as_versions() {
        let r = Requirement::parse("2.12.0");
        assert!(r.is_satisfied_by("2.12.0"));
        assert!(r.is_satisfied_by("2.12"));
        assert!(r.is_satisfied_by("2.12.0+cu118"));
        assert!(!r.is_satisfied_by("2.12.1"));
        assert!(!r.is_satisfied_by("2.2.0"));
    }

    #[test]
    fn ranges_compare_numerically_not_as_strings() {
        let r = Requirement::parse(">=2.12,<3");
        assert!(r.is_satisfied_by("2.12.0"));
        assert!(r.is_satisfied_by("2.15.1"));
        assert!(!r.is_satisfied_by("2.9.0"), "2.9 < 2.12 as versions");
        assert!(!r.is_satisfied_by("3.0.0"));
        assert!(!r.is_satisfied_by("not-a-version"));
    }

    #[test]
    fn any_and_verbatim_requirements() {
        assert!(Requirement::parse("").is_satisfied_by("whatever"));
        assert!(Requirement::parse("*").is_satisfied_by("1.0"));
        let verbatim = Requirement::parse("latest");
        assert!(verbatim.is_satisfied_by("latest"));
        assert!(!verbatim.is_satisfied_by("1.0"));
    }

    #[test]
    fn search_matching() {
        assert!(requirement_matches("2.13.0", ">=2.12,<3"));
        assert!(!requirement_matches("2.9.0", ">=2.12,<3"));
        assert!(requirement_matches(">=2.12", "2.13.0"));
        assert!(requirement_matches("anything", ""));
        assert!(requirement_matches(">=2.12", ">=2.12"));
    }

    #[test]
    fn any_version_is_found_by_every_search() {
        for wanted in ["", "*", ">=2", "2.13.0", "<1", "==2.*", "~=1.4"] {
            assert!(requirement_matches("*", wanted), "* vs {wanted}");
            assert!(requirement_matches("", wanted), "empty vs {wanted}");
        }
    }

    #[test]
    fn ranges_match_when_some_version_satisfies_both() {
        let overlapping = [
            (">=2.12", ">=2.0,<3"),
            (">=2.12", ">=2.0"),
            (">=2.12,<2.14", ">2.13"),
            ("<=2", ">=2"),
            ("==2.*", ">=2.5,<4"),
            ("~=2.12", "==2.*"),
            ("~=1.4.5", ">1.4.9"),
            (">=1,!=1.5", "==1.5.*"),
            ("!=2.0", ">=2.0,<=2.0.1"),
            (">=2.0.0rc1", "<2.0.1"),
            ("<2.0.0rc2", ">=2.0.0rc1"),
            ("==2.1.0", "==2.1.0+cu118"),
        ];
        for (required, wanted) in overlapping {
            assert!(
                requirement_matches(required, wanted),
                "{required} vs {wanted}"
            );
            assert!(
                requirement_matches(wanted, required),
                "{wanted} vs {required}"
            );
        }
        let disjoint = [
            (">=3", "<2"),
            (">=2", "<2"),
            (">2", "<=2"),
            ("<3", "==3.*"),
            ("~=2.12", ">=3"),
            ("~=1.4.5", "<1.4.5"),
            ("==1.5", "!=1.5"),
            ("!=2.*", "==2.5"),
            ("!=2.*", ">=2.1,<2.9"),
            ("<2.0", ">=2.0rc1,<2.0.0"),
            (">=2.0.0rc1", "<2.0.0"),
            (">2.0", "==2.0.post1"),
            ("==2.1.0+cu117", "==2.1.0+cu118"),
        ];
        for (required, wanted) in disjoint {
            assert!(
                !requirement_matches(required, wanted),
                "{required} vs {wanted}"
            );
            assert!(
                !requirement_matches(wanted, required),
                "{wanted} vs {required}"
            );
        }
    }

    #[test]
    fn overlap_agrees_with_version_checks_on_a_grid() {
        // Whenever a concrete version satisfies both ranges, the ranges must be found to overlap.
        let ranges = [
            ">=2.12",
            "<3",
            ">=2,<3",
            "==2.*",
            "~=2.12",
            "!=2.13.0",
            ">2.13",
            "<=2.12",
            "==2.12.0",
            "~=2.12.1",
            "<2.12.0rc1",
            ">=2.13.0.dev0,<2.13",
        ];
        let versions = [
            "1.0",
            "2.0",
            "2.11.9",
            "2.12.0rc1",
            "2.12",
            "2.12.1",
            "2.13.0.dev0",
            "2.13.0",
            "2.13.1",
            "2.99",
            "3.0.0rc1",
            "3.0",
        ];
        for a in ranges {
            for b in ranges {
                let witness = versions.iter().any(|v| {
                    Requirement::parse(a).is_satisfied_by(v)
                        && Requirement::parse(b).is_satisfied_by(v)
                });
                if witness {
                    assert!(requirement_matches(a, b), "{a} vs {b}");
                }
            }
        }
    }
}
