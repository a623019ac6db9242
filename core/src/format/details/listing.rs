//! The details' listing, `key: value; ` for each entry as the API shows it (what the forwarded
//! Log4j line carries, docs/FORMAT.md section 12.2), made at ingestion from the map the XML is
//! encoded from and kept beside the XML, so the line need not decode that XML again.
//!
//! It is what decoding the XML lists, by construction: [`encode_listed`] is the only way to make
//! a [`Listing`] that holds a text, and it lists the very entries it encodes, after Java's puts
//! ([`java_puts`]: what [`decode`] returns for that XML; proven against `decode` by the property
//! test below), each value as [`top_value_text`] shows it. A map too deep or too large for
//! `decode` to accept gets no listing, so the caller decodes, and fails, as before.

use super::{
    DetailValue, Details, MAX_DEPTH, MAX_VALUES, MapClass, encode_puts, java_puts, top_value_text,
};

/// The listing of a details map and the length of the XML it was encoded to;
/// `Listing::default()` holds none.
#[derive(Debug, Clone, Default)]
pub struct Listing(Option<(String, usize)>);

/// Encodes `details` as [`encode`](super::encode) does, and lists them with the XML.
pub fn encode_listed(details: &Details, class: MapClass, java_version: &str) -> (String, Listing) {
    let top = java_puts(details, class);
    let xml = encode_puts(&top, class, java_version);
    let listing = within_limits(details).then(|| {
        let mut out = String::with_capacity(64);
        for (key, value) in &top {
            push_entry(&mut out, key, &top_value_text(value));
        }
        (out, xml.len())
    });
    (xml, Listing(listing))
}

impl Listing {
    /// Whether a text is kept.
    pub fn is_some(&self) -> bool {
        self.0.is_some()
    }

    /// The kept text's length in bytes (0 when none).
    pub fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |(text, _)| text.len())
    }

    /// The listing of `decode(xml)` ([`push_listing`]), without decoding `xml`: `xml` must be
    /// the XML this was made with (`encode_listed`). None when no text is kept or `xml` is not
    /// as long as that XML (a caller's mistake): the caller then decodes `xml`.
    pub fn of(&self, xml: &str) -> Option<&str> {
        match &self.0 {
            Some((text, len)) if *len == xml.len() => Some(text),
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

/// Whether `decode` accepts the XML of `details` on size and depth (nested deeper than
/// [`MAX_DEPTH`] allows or more than [`MAX_VALUES`] values, counted generously so the
/// borderline falls to `decode` too): every value element it counts (a key, a value, a date's
/// inner `<long>`) is at most two per value of the map, and every map or list one level; with a
/// level to spare.
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
    let mut count = 1;
    details.iter().all(|(_, v)| walk(v, 2, &mut count))
}

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

    fn kept_fields(kept: &Listing, xml: &str) -> Option<String> {
        kept.of(xml).map(String::from)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// The listing is exactly what decoding its XML lists, for maps of every kind of
        /// value and key (repeated keys, `B64:` and non-ASCII strings, characters XML cannot
        /// carry, nested maps and lists, NaN and -0.0), under both map classes.
        #[test]
        fn shows_what_decoding_its_xml_shows(
            d in super::super::tests::details(),
            base64 in any::<bool>(),
        ) {
            let class = if base64 { MapClass::Base64PutHashMap } else { MapClass::LinkedHashMap };
            let (xml, kept) = encode_listed(&d, class, JAVA_VERSION);
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
        let (xml, kept) = encode_listed(&d, MapClass::Base64PutHashMap, JAVA_VERSION);
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
            let (xml, kept) = encode_listed(&vec![("k".into(), s(value))], class, JAVA_VERSION);
            let shown = kept_fields(&kept, &xml).unwrap();
            assert_eq!(shown, format!("k: {expected}; "), "{value:?}");
            assert_eq!(Some(shown), decoded_fields(&xml));
        }
    }

    #[test]
    fn nothing_kept_or_too_deep_shows_nothing_and_many_keys_list_as_decoded() {
        assert!(kept_fields(&Listing::default(), "<java/>").is_none());
        let mut deep = DetailValue::Null;
        for _ in 0..MAX_DEPTH {
            deep = DetailValue::List(vec![deep]);
        }
        let (xml, kept) = encode_listed(
            &vec![("k".into(), deep)],
            MapClass::LinkedHashMap,
            JAVA_VERSION,
        );
        assert!(kept_fields(&kept, &xml).is_none());
        // Many keys, every tenth repeated: listed as decoding lists them.
        let many: Details = (0..1000)
            .map(|i| ((i / 10 * 10 + i % 10 % 9).to_string(), DetailValue::Int(i)))
            .collect();
        let (xml, kept) = encode_listed(&many, MapClass::LinkedHashMap, JAVA_VERSION);
        assert!(kept_fields(&kept, &xml).is_some());
        assert_eq!(kept_fields(&kept, &xml), decoded_fields(&xml));
        // Beside XML of another length (not the XML it was encoded to): nothing.
        let (xml, kept) = encode_listed(
            &vec![("k".into(), DetailValue::Int(1))],
            MapClass::LinkedHashMap,
            JAVA_VERSION,
        );
        assert!(kept_fields(&kept, &xml).is_some());
        assert!(kept_fields(&kept, &format!("{xml} ")).is_none());
    }
}
