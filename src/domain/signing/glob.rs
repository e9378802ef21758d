//! The trust policy's `match` globs: `*` is any run of characters (also none, also `/`), `?` exactly one
//! character, everything else itself. No classes or escapes: model names and component ids never need them.

/// Whether `text` matches `pattern` as a whole.
pub fn matches(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    // The last `*` seen and where in `text` it started matching: on a mismatch it takes one more character.
    // Linear backtracking to the last star only is enough for `*`-only globs (no exponential blow-up).
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == '?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn literal_patterns_match_only_themselves() {
        assert!(matches("fall-detector", "fall-detector"));
        assert!(!matches("fall-detector", "fall-detector2"));
        assert!(!matches("fall-detector", "fall-detecto"));
        assert!(!matches("Fall", "fall"));
        assert!(matches("", ""));
        assert!(!matches("", "a"));
    }

    #[test]
    fn star_matches_any_run_including_none() {
        assert!(matches("fall-*", "fall-"));
        assert!(matches("fall-*", "fall-detector"));
        assert!(!matches("fall-*", "fal-detector"));
        assert!(matches("*", ""));
        assert!(matches("*", "anything/at all"));
        assert!(matches("*-v?", "pose-v2"));
        assert!(matches("a*b*c", "a-b-b-c"));
        assert!(!matches("a*b*c", "a-b-b-d"));
        assert!(matches("*detector", "fall-detector"));
        assert!(!matches("*detector", "fall-detector-x"));
        assert!(matches("**x", "x"));
    }

    #[test]
    fn question_mark_matches_exactly_one_character() {
        assert!(matches("v?", "v1"));
        assert!(!matches("v?", "v"));
        assert!(!matches("v?", "v12"));
        assert!(matches("?", "é"), "one character, not one byte");
    }

    #[test]
    fn backtracking_stays_linear_on_adversarial_input() {
        let text = "a".repeat(10_000);
        let pattern = format!("{}b", "*a".repeat(50));
        let start = std::time::Instant::now();
        assert!(!matches(&pattern, &text));
        // A naive recursive matcher takes ages here; this one is at most |pattern| x |text| steps.
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }
}
