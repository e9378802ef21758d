//! A sha256 digest, parsed once: 64 lower-case hex digits. Digests name files on disk, so text from outside
//! (an upstream's answer, a URL) becomes one only through [`Sha256::parse`].

use std::fmt;

use super::DomainError;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sha256(String);

impl Sha256 {
    /// Accepts exactly 64 lower-case hex digits; anything else (`../x`, upper case, a shorter string) is refused.
    pub fn parse(text: &str) -> Result<Self, DomainError> {
        let valid =
            text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if valid {
            Ok(Self(text.to_string()))
        } else {
            let shown: String = text.chars().take(80).collect();
            Err(DomainError::new(
                "sha256",
                format!("{shown:?} is not 64 lower-case hex digits"),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Sha256;

    #[test]
    fn only_64_lower_case_hex_digits_are_a_digest() {
        let good = "ab".repeat(32);
        assert_eq!(Sha256::parse(&good).unwrap().as_str(), good);
        for bad in [
            "",
            "../../x",
            &"AB".repeat(32),
            &"ab".repeat(31),
            &format!("{}/", "a".repeat(63)),
            &format!("{}..", "a".repeat(62)),
            &"a".repeat(65),
        ] {
            assert!(Sha256::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
