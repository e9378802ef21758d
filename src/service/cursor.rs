//! Opaque pagination cursors: the kind and sort key of the last item seen, base64url-encoded.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::ServiceError;
use crate::domain::{ComponentKey, Kind};

pub fn encode(key: &ComponentKey) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{}", key.kind(), key.sort_key()))
}

/// Reads a cursor, refusing anything that was not produced by [`encode`] for one of `kinds`.
pub fn decode(cursor: &str, kinds: &[Kind]) -> Result<(Kind, String), ServiceError> {
    let invalid = || ServiceError::InvalidInput("after: not a cursor of this listing".into());
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (kind, sort_key) = text.split_once(':').ok_or_else(invalid)?;
    let kind = Kind::parse(kind)
        .filter(|k| kinds.contains(k))
        .ok_or_else(invalid)?;
    // Validating the key keeps forged cursors from smuggling odd strings into store queries.
    ComponentKey::from_sort_key(kind, sort_key).map_err(|_| invalid())?;
    Ok((kind, sort_key.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_other_listings() {
        let key = ComponentKey::model("fall-detection", "pilot-2-1").unwrap();
        let cursor = encode(&key);
        assert_eq!(
            decode(&cursor, &[Kind::Model]).unwrap(),
            (Kind::Model, key.sort_key())
        );
        assert!(decode(&cursor, &[Kind::Service]).is_err());
        assert!(decode("not base64!", &[Kind::Model]).is_err());
    }
}
