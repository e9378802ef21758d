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

/// Does a component's requirement `required` fall within what a search asks for (`wanted`)?
///
/// Components usually pin one version (`2.12.0`): it matches when it satisfies `wanted` (`>=2.12,<3`). A component
/// that itself asks for a range matches a search for a single version that the range accepts. Two ranges match only
/// when they are written the same way: overlap of ranges is not what users search for.
///
/// ```
/// use component_repository::domain::version::requirement_matches;
///
/// assert!(requirement_matches("2.13.0", ">=2.12,<3"));
/// assert!(requirement_matches(">=2.12", "2.13.0"));
/// assert!(!requirement_matches("3.0.0", ">=2.12,<3"));
/// ```
pub fn requirement_matches(required: &str, wanted: &str) -> bool {
    let wanted_requirement = Requirement::parse(wanted);
    if matches!(wanted_requirement, Requirement::Any) {
        return true;
    }
    let required = required.trim();
    if Version::from_str(required).is_ok() {
        return wanted_requirement.is_satisfied_by(required);
    }
    let wanted = wanted.trim();
    if Version::from_str(wanted).is_ok() {
        return Requirement::parse(required).is_satisfied_by(wanted);
    }
    required == wanted
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(!requirement_matches(">=2.12", ">=2.0"));
    }
}
