//! The details' listing, `key: value; ` for each entry as the API shows it (what the forwarded
//! Log4j line carries, docs/FORMAT.md section 12.2), made at ingestion from the map the XML is
//! encoded from and kept beside the XML, so the line need not decode that XML again.
//!
//! It is what decoding the XML lists, by construction: [`encode_kept`] is the only way to make a
//! [`Kept`] that holds a listing, and it lists the very map it encodes, as [`decode`] would return
//! it for that XML (a repeated key once, at its first place, with its last value; the
//! Base64PutHashMap rule applied to top-level strings; proven against `decode` by the property
//! test below), each value as [`top_value_text`] shows it. A map too deep or too large for
//! `decode` to accept gets no listing, so the caller decodes, and fails, as before.

use std::borrow::Cow;

use super::{
    DetailValue, Details, MAX_DEPTH, MAX_VALUES, MapClass, base64_put_rule, encode, top_value_text,
};

/// The listing of a details map and the length of the XML it was encoded to;
/// `Kept::default()` holds none.
#[derive(Debug, Clone, Default)]
pub struct Kept(Option<(String, usize)>);

/// Encodes `details` ([`encode`]) and keeps their listing with the XML.
pub fn encode_kept(details: Details, class: MapClass, java_version: &str) -> (String, Kept) {
    let xml = encode(&details, class, java_version);
    let kept = listing_of(&details, class).map(|listing| (listing, xml.len()));
    (xml, Kept(kept))
}

impl Kept {
    /// Whether a listing is kept.
    pub fn is_some(&self) -> bool {
        self.0.is_some()
    }

    /// The kept listing's length in bytes (0 when none).
    pub fn listing_len(&self) -> usize {
        self.0.as_ref().map_or(0, |(listing, _)| listing.len())
    }

    /// The listing of `decode(xml)` ([`push_listing`]), without decoding `xml`: `xml` must be
    /// the XML this was made with (`encode_kept`). None when no listing is kept or `xml` is not
    /// as long as that XML (a caller's mistake): the caller then decodes `xml`.
    pub fn listing(&self, xml: &str) -> Option<&str> {
        match &self.0 {
            Some((listing, len)) if *len == xml.len() => Some(listing),
            _ => None,
        }
    }
}

/// Appends `key: value; ` for each entry of `decoded` (a map as [`decode`] returns it), the
/// value as [`top_value_text`] shows it.
pub fn push_listing(out: &mut String, decoded: &Details) {
    for (key, value) in decoded {
        push_entry(out, key, &top_value_text(value));
    }
}

fn push_entry(out: &mut String, key: &str, value: &str) {
    out.push_str(key);
    out.push_str(": ");
    out.push_str(value);
    out.push_str("; ");
}

/// The listing `decode` of `details`' XML gives (see the module's comment), or None when the map
/// is one `decode` would refuse (nested deeper than [`MAX_DEPTH`] allows or more than
/// [`MAX_VALUES`] values; both counted generously, so the borderline falls to `decode` too) or
/// has more than `MAX_KEPT_KEYS` keys.
fn listing_of(details: &Details, class: MapClass) -> Option<String> {
    if !within_limits(details) {
        return None;
    }
    let base64 = class == MapClass::Base64PutHashMap;
    let mut out = String::with_capacity(64);
    // Java's puts: a repeated key keeps its first place and takes its last value.
    for (i, (key, _)) in details.iter().enumerate() {
        if details[..i].iter().any(|(k, _)| k == key) {
            continue;
        }
        let value = details
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map_or(&details[i].1, |(_, v)| v);
        let stored = match value {
            DetailValue::String(s) if base64 => match base64_put_rule(s) {
                Cow::Borrowed(_) => Cow::Borrowed(value),
                Cow::Owned(encoded) => Cow::Owned(DetailValue::String(encoded)),
            },
            _ => Cow::Borrowed(value),
        };
        push_entry(&mut out, key, &top_value_text(&stored));
    }
    Some(out)
}

/// Whether `decode` accepts the XML of `details` on size and depth: every value element it
/// counts (a key, a value, a date's inner `<long>`) is at most two per value of the map, and
/// every map or list one level; with a level to spare.
fn within_limits(details: &Details) -> bool {
    fn walk(v: &DetailValue, depth: usize, count: &mut usize) -> bool {
        *count += 2;
        if *count > MAX_VALUES / 2 {
            return false;
        }
        match v {
            DetailValue::List(items) => {
                depth < MAX_DEPTH && items.iter().all(|v| walk(v, depth + 1, count))
            }
            DetailValue::Map(entries) => {
                depth < MAX_DEPTH && entries.iter().all(|(_, v)| walk(v, depth + 1, count))
            }
            _ => true,
        }
    }
    // Quadratic replay of the puts in `listing_of` is fine for the maps ingestion makes; a map
    // with many keys is decoded instead.
    let mut count = 1;
    details.len() <= MAX_KEPT_KEYS && details.iter().all(|(_, v)| walk(v, 2, &mut count))
}

/// Most top-level keys `listing_of` lists itself (it finds repeated keys by scanning).
const MAX_KEPT_KEYS: usize = 64;

#[cfg(test)]
mod tests {
    use super::super::{JAVA_VERSION, decode};
    use super::*;
    use proptest::prelude::*;

    /// What decoding `xml` lists.
    fn decoded_fields(xml: &str) -> Option<String> {
        let mut out = String::new();
        push_listing(&mut out, &decode(xml).ok()?);
        Some(out)
    }

    fn kept_fields(kept: &Kept, xml: &str) -> Option<String> {
        kept.listing(xml).map(String::from)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// The kept map shows exactly what decoding its XML shows, for maps of every kind of
        /// value and key (repeated keys, `B64:` and non-ASCII strings, characters XML cannot
        /// carry, nested maps and lists, NaN and -0.0), under both map classes.
        #[test]
        fn shows_what_decoding_its_xml_shows(
            d in super::super::tests::details(),
            base64 in any::<bool>(),
        ) {
            let class = if base64 { MapClass::Base64PutHashMap } else { MapClass::LinkedHashMap };
            let (xml, kept) = encode_kept(d, class, JAVA_VERSION);
            let shown = kept_fields(&kept, &xml);
            prop_assert!(shown.is_some());
            prop_assert_eq!(shown, decoded_fields(&xml), "{}", xml);
        }
    }

    #[test]
    fn repeated_keys_and_b64_as_decoding_shows_them() {
        let s = |v: &str| DetailValue::String(v.into());
        let d: Details = vec![
            ("a".into(), s("first")),
            ("b".into(), s("B64:aGVsbG8=")),
            ("c".into(), s("grüße\u{1}")),
            ("a".into(), s("last")),
            ("d".into(), DetailValue::Double(-0.0)),
        ];
        let (xml, kept) = encode_kept(d, MapClass::Base64PutHashMap, JAVA_VERSION);
        let shown = kept_fields(&kept, &xml).unwrap();
        assert_eq!(shown, "a: last; b: hello; c: grüße\u{1}; d: -0.0; ");
        assert_eq!(Some(shown), decoded_fields(&xml));
        // Base64 text with a line break: not printable ASCII, so Base64PutHashMap stores it
        // encoded whole (and shows it as given) unless it starts with `B64:` exactly; a
        // LinkedHashMap stores it as given, and display decodes any `b64:` prefix.
        for (value, class, expected) in [
            (
                "b64:aGVs\nbG8=",
                MapClass::Base64PutHashMap,
                "b64:aGVs\nbG8=",
            ),
            ("b64:aGVs\nbG8=", MapClass::LinkedHashMap, "hello"),
            ("B64:aGVs\nbG8=", MapClass::Base64PutHashMap, "hello"),
        ] {
            let (xml, kept) = encode_kept(vec![("k".into(), s(value))], class, JAVA_VERSION);
            let shown = kept_fields(&kept, &xml).unwrap();
            assert_eq!(shown, format!("k: {expected}; "), "{value:?}");
            assert_eq!(Some(shown), decoded_fields(&xml));
        }
    }

    #[test]
    fn nothing_kept_or_too_deep_or_too_many_keys_shows_nothing() {
        assert!(kept_fields(&Kept::default(), "<java/>").is_none());
        let mut deep = DetailValue::Null;
        for _ in 0..MAX_DEPTH {
            deep = DetailValue::List(vec![deep]);
        }
        let (xml, kept) = encode_kept(
            vec![("k".into(), deep)],
            MapClass::LinkedHashMap,
            JAVA_VERSION,
        );
        assert!(kept_fields(&kept, &xml).is_none());
        let many: Details = (0..=MAX_KEPT_KEYS)
            .map(|i| (i.to_string(), DetailValue::Int(1)))
            .collect();
        let (xml, kept) = encode_kept(many, MapClass::LinkedHashMap, JAVA_VERSION);
        assert!(kept_fields(&kept, &xml).is_none());
        // Beside XML of another length (not the XML it was encoded to): nothing.
        let (xml, kept) = encode_kept(
            vec![("k".into(), DetailValue::Int(1))],
            MapClass::LinkedHashMap,
            JAVA_VERSION,
        );
        assert!(kept_fields(&kept, &xml).is_some());
        assert!(kept_fields(&kept, &format!("{xml} ")).is_none());
    }
}
