use super::*;
use proptest::prelude::*;
use serde_json::json;

fn s(v: &str) -> DetailValue {
    DetailValue::String(v.to_string())
}

fn entry(k: &str, v: DetailValue) -> (String, DetailValue) {
    (k.to_string(), v)
}

/// Equality where any NaN equals any NaN (Java writes every NaN as `NaN`) and -0.0 != 0.0.
fn same(a: &DetailValue, b: &DetailValue) -> bool {
    use DetailValue as V;
    match (a, b) {
        (V::Double(x), V::Double(y)) => (x.is_nan() && y.is_nan()) || x.to_bits() == y.to_bits(),
        (V::Float(x), V::Float(y)) => (x.is_nan() && y.is_nan()) || x.to_bits() == y.to_bits(),
        (V::List(x), V::List(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
        (V::Map(x), V::Map(y)) => same_details(x, y),
        _ => a == b,
    }
}

fn same_details(a: &Details, b: &Details) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ka, va), (kb, vb))| ka == kb && same(va, vb))
}

fn assert_same(actual: &Details, expected: &Details) {
    assert!(
        same_details(actual, expected),
        "got {actual:#?}\nexpected {expected:#?}"
    );
}

// ---- encoding: expected strings are verbatim output of OpenJDK 17.0.15 XMLEncoder ----

#[test]
fn encode_spec_example() {
    let d = vec![entry("KEYALIAS", s("signKey"))];
    let expected = r#"<?xml version="1.0" encoding="UTF-8"?>
<java version="17.0.15" class="java.beans.XMLDecoder">
 <object class="org.cesecore.util.Base64PutHashMap">
  <void method="put">
   <string>KEYALIAS</string>
   <string>signKey</string>
  </void>
 </object>
</java>
"#;
    assert_eq!(encode(&d, MapClass::Base64PutHashMap, "17.0.15"), expected);
    assert_eq!(decode(expected).unwrap(), d);
}

fn kinds() -> Details {
    use DetailValue as V;
    vec![
        entry("s", s("text")),
        entry("null", V::Null),
        entry("int", V::Int(42)),
        entry("neg", V::Int(-7)),
        entry("long", V::Long(1234567890123)),
        entry("t", V::Bool(true)),
        entry("f", V::Bool(false)),
        entry("float", V::Float(1.5)),
        entry("floatbig", V::Float(1.0E10)),
        entry("floatodd", V::Float(4.5891097E18)),
        entry("double", V::Double(1.5)),
        entry("dbig", V::Double(1.0E10)),
        entry("nan", V::Double(f64::NAN)),
        entry("ninf", V::Double(f64::NEG_INFINITY)),
        entry("milli", V::Double(0.001)),
        entry("small", V::Double(1.0E-4)),
        entry("negzero", V::Double(-0.0)),
        entry("e23", V::Double(1.0E23)),
        entry("min", V::Double(f64::from_bits(1))),
        entry("date", V::Date(1700000000000)),
        entry("before1970", V::Date(-5)),
        entry("cls", V::Class("java.lang.String".into())),
        entry(
            "list",
            V::List(vec![s("x"), V::Null, V::Int(1), V::List(vec![])]),
        ),
        entry(
            "map",
            V::Map(vec![
                entry("k", s("v")),
                entry("e", V::Map(vec![])),
                entry("l", V::List(vec![s("a")])),
            ]),
        ),
        entry("emptylist", V::List(vec![])),
    ]
}

/// JDK 17 output for `kinds()`, except `floatodd` and `e23`, which show the JDK 19+ digits we
/// write (JDK 17 prints `4.58910975E18` and `9.999999999999999E22`).
const KINDS_XML: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<java version="17.0.15" class="java.beans.XMLDecoder">
 <object class="java.util.LinkedHashMap">
  <void method="put">
   <string>s</string>
   <string>text</string>
  </void>
  <void method="put">
   <string>null</string>
   <null/>
  </void>
  <void method="put">
   <string>int</string>
   <int>42</int>
  </void>
  <void method="put">
   <string>neg</string>
   <int>-7</int>
  </void>
  <void method="put">
   <string>long</string>
   <long>1234567890123</long>
  </void>
  <void method="put">
   <string>t</string>
   <boolean>true</boolean>
  </void>
  <void method="put">
   <string>f</string>
   <boolean>false</boolean>
  </void>
  <void method="put">
   <string>float</string>
   <float>1.5</float>
  </void>
  <void method="put">
   <string>floatbig</string>
   <float>1.0E10</float>
  </void>
  <void method="put">
   <string>floatodd</string>
   <float>4.5891097E18</float>
  </void>
  <void method="put">
   <string>double</string>
   <double>1.5</double>
  </void>
  <void method="put">
   <string>dbig</string>
   <double>1.0E10</double>
  </void>
  <void method="put">
   <string>nan</string>
   <double>NaN</double>
  </void>
  <void method="put">
   <string>ninf</string>
   <double>-Infinity</double>
  </void>
  <void method="put">
   <string>milli</string>
   <double>0.001</double>
  </void>
  <void method="put">
   <string>small</string>
   <double>1.0E-4</double>
  </void>
  <void method="put">
   <string>negzero</string>
   <double>-0.0</double>
  </void>
  <void method="put">
   <string>e23</string>
   <double>1.0E23</double>
  </void>
  <void method="put">
   <string>min</string>
   <double>4.9E-324</double>
  </void>
  <void method="put">
   <string>date</string>
   <object class="java.util.Date">
    <long>1700000000000</long>
   </object>
  </void>
  <void method="put">
   <string>before1970</string>
   <object class="java.util.Date">
    <long>-5</long>
   </object>
  </void>
  <void method="put">
   <string>cls</string>
   <class>java.lang.String</class>
  </void>
  <void method="put">
   <string>list</string>
   <object class="java.util.ArrayList">
    <void method="add">
     <string>x</string>
    </void>
    <void method="add">
     <null/>
    </void>
    <void method="add">
     <int>1</int>
    </void>
    <void method="add">
     <object class="java.util.ArrayList"/>
    </void>
   </object>
  </void>
  <void method="put">
   <string>map</string>
   <object class="java.util.LinkedHashMap">
    <void method="put">
     <string>k</string>
     <string>v</string>
    </void>
    <void method="put">
     <string>e</string>
     <object class="java.util.LinkedHashMap"/>
    </void>
    <void method="put">
     <string>l</string>
     <object class="java.util.ArrayList">
      <void method="add">
       <string>a</string>
      </void>
     </object>
    </void>
   </object>
  </void>
  <void method="put">
   <string>emptylist</string>
   <object class="java.util.ArrayList"/>
  </void>
 </object>
</java>
"#;

#[test]
fn encode_every_value_kind() {
    assert_eq!(
        encode(&kinds(), MapClass::LinkedHashMap, "17.0.15"),
        KINDS_XML
    );
}

#[test]
fn decode_every_value_kind() {
    assert_same(&decode(KINDS_XML).unwrap(), &kinds());
}

fn escaping() -> Details {
    vec![
        entry("amp", s("a&b<c>d\"e'f")),
        entry("cr", s("a\rb")),
        entry("crlf", s("\r\n")),
        entry("ctl", s("a\u{1}b")),
        entry("nul", s("\u{0}")),
        entry("mix", s("x\u{1}\u{2}y\u{1f}z\u{7f}\u{80}q")),
        entry("tabnl", s("a\tb\nc")),
        entry("nonascii", s("åäö€😀")),
        entry("empty", s("")),
        entry("fffe", s("\u{fffe}\u{ffff}")),
        entry("spaces", s("  two  ")),
        entry("k&<>\"'\r\u{1}y", s("v")),
    ]
}

/// Java output for [`escaping`]: DEL, U+0080, tab, LF and non-ASCII are raw.
const ESCAPING_XML: &str = concat!(
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
    "<java version=\"17.0.15\" class=\"java.beans.XMLDecoder\">\n",
    " <object class=\"java.util.LinkedHashMap\">\n",
    "  <void method=\"put\">\n",
    "   <string>amp</string>\n",
    "   <string>a&amp;b&lt;c&gt;d&quot;e&apos;f</string>\n",
    "  </void>\n",
    "  <void method=\"put\">\n",
    "   <string>cr</string>\n",
    "   <string>a&#13;b</string>\n",
    "  </void>\n",
    "  <void method=\"put\">\n",
    "   <string>crlf</string>\n",
    "   <string>&#13;\n",
    "</string>\n",
    "  </void>\n",
    "  <void method=\"put\">\n",
    "   <string>ctl</string>\n",
    "   <string>a<char code=\"#1\"/>b</string>\n",
    "  </void>\n",
    "  <void method=\"put\">\n",
    "   <string>nul</string>\n",
    "   <string><char code=\"#0\"/></string>\n",
    "  </void>\n",
    "  <void method=\"put\">\n",
    "   <string>mix</string>\n",
    "   <string>x<char code=\"#1\"/><char code=\"#2\"/>y<char code=\"#1f\"/>z\u{7f}\u{80}q</string>\n",
    "  </void>\n",
    "  <void method=\"put\">\n",
    "   <string>tabnl</string>\n",
    "   <string>a\tb\n",
    "c</string>\n",
    "  </void>\n",
    "  <void method=\"put\">\n",
    "   <string>nonascii</string>\n",
    "   <string>åäö€😀</string>\n",
    "  </void>\n",
    "  <void method=\"put\">\n",
    "   <string>empty</string>\n",
    "   <string></string>\n",
    "  </void>\n",
    "  <void method=\"put\">\n",
    "   <string>fffe</string>\n",
    "   <string><char code=\"#fffe\"/><char code=\"#ffff\"/></string>\n",
    "  </void>\n",
    "  <void method=\"put\">\n",
    "   <string>spaces</string>\n",
    "   <string>  two  </string>\n",
    "  </void>\n",
    "  <void method=\"put\">\n",
    "   <string>k&amp;&lt;&gt;&quot;&apos;&#13;<char code=\"#1\"/>y</string>\n",
    "   <string>v</string>\n",
    "  </void>\n",
    " </object>\n",
    "</java>\n",
);

#[test]
fn encode_escaping() {
    assert_eq!(
        encode(&escaping(), MapClass::LinkedHashMap, "17.0.15"),
        ESCAPING_XML
    );
}

#[test]
fn decode_escaping() {
    assert_eq!(decode(ESCAPING_XML).unwrap(), escaping());
}

fn b64_input() -> Details {
    use DetailValue as V;
    vec![
        entry("KEYALIAS", s("signKey")),
        entry("x", s("åäö")),
        entry("e", s("")),
        entry("b", s("B64:zzz")),
        entry("c", s("a\u{1}")),
        entry("tab", s("a\tb")),
        entry("n", V::Null),
        entry("i", V::Int(1)),
        entry("nested", V::Map(vec![entry("u", s("åäö"))])),
        entry("list", V::List(vec![s("åäö")])),
    ]
}

const B64_XML: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<java version="17.0.15" class="java.beans.XMLDecoder">
 <object class="org.cesecore.util.Base64PutHashMap">
  <void method="put">
   <string>KEYALIAS</string>
   <string>signKey</string>
  </void>
  <void method="put">
   <string>x</string>
   <string>B64:w6XDpMO2</string>
  </void>
  <void method="put">
   <string>e</string>
   <string></string>
  </void>
  <void method="put">
   <string>b</string>
   <string>B64:zzz</string>
  </void>
  <void method="put">
   <string>c</string>
   <string>B64:YQE=</string>
  </void>
  <void method="put">
   <string>tab</string>
   <string>B64:YQli</string>
  </void>
  <void method="put">
   <string>n</string>
   <null/>
  </void>
  <void method="put">
   <string>i</string>
   <int>1</int>
  </void>
  <void method="put">
   <string>nested</string>
   <object class="java.util.LinkedHashMap">
    <void method="put">
     <string>u</string>
     <string>åäö</string>
    </void>
   </object>
  </void>
  <void method="put">
   <string>list</string>
   <object class="java.util.ArrayList">
    <void method="add">
     <string>åäö</string>
    </void>
   </object>
  </void>
 </object>
</java>
"#;

#[test]
fn encode_base64_put_rule_top_level_only() {
    assert_eq!(
        encode(&b64_input(), MapClass::Base64PutHashMap, "17.0.15"),
        B64_XML
    );
}

#[test]
fn decode_keeps_b64_values_as_stored() {
    let d = decode(B64_XML).unwrap();
    assert_eq!(d[1], entry("x", s("B64:w6XDpMO2")));
    assert_eq!(d[4], entry("c", s("B64:YQE=")));
    assert_eq!(
        d[8],
        entry("nested", DetailValue::Map(vec![entry("u", s("åäö"))]))
    );
}

#[test]
fn encode_repeated_key_like_java_put() {
    // Java: put("a","1"); put("b","2"); put("a","ö") on a Base64PutHashMap.
    let d = vec![entry("a", s("1")), entry("b", s("2")), entry("a", s("ö"))];
    let expected = r#"<?xml version="1.0" encoding="UTF-8"?>
<java version="17.0.15" class="java.beans.XMLDecoder">
 <object class="org.cesecore.util.Base64PutHashMap">
  <void method="put">
   <string>a</string>
   <string>B64:w7Y=</string>
  </void>
  <void method="put">
   <string>b</string>
   <string>2</string>
  </void>
 </object>
</java>
"#;
    assert_eq!(encode(&d, MapClass::Base64PutHashMap, "17.0.15"), expected);
}

#[test]
fn encode_empty_maps() {
    assert_eq!(
        encode(&vec![], MapClass::Base64PutHashMap, "17.0.15"),
        r#"<?xml version="1.0" encoding="UTF-8"?>
<java version="17.0.15" class="java.beans.XMLDecoder">
 <object class="org.cesecore.util.Base64PutHashMap"/>
</java>
"#
    );
    let lhm = r#"<?xml version="1.0" encoding="UTF-8"?>
<java version="17.0.15" class="java.beans.XMLDecoder">
 <object class="java.util.LinkedHashMap"/>
</java>
"#;
    assert_eq!(encode(&vec![], MapClass::LinkedHashMap, "17.0.15"), lhm);
    assert_eq!(decode(lhm).unwrap(), vec![]);
}

fn nums() -> Details {
    use DetailValue as V;
    vec![
        entry("a", V::Double(1.0E23)),
        entry("b", V::Double(2.82879384806159E17)),
        entry("c", V::Float(4.5891097E18)),
        // 1628080.25 exactly: a tie between 1628080.2 and 1628080.3; Java picks the even digit.
        entry("d", V::Float(f32::from_bits(0x49c6_bd82))),
        entry("e", V::Double(f64::from_bits(1))),
        entry("f", V::Double(f64::from_bits(0x14))),
    ]
}

#[test]
fn encode_numbers_as_jdk19_and_decode_both_digit_styles() {
    // JDK 17 (FloatingDecimal) and JDK 25 (shortest decimal) write different digits.
    let head = r#"<?xml version="1.0" encoding="UTF-8"?>
<java version="VERSION" class="java.beans.XMLDecoder">
 <object class="java.util.LinkedHashMap">
  <void method="put">
   <string>a</string>
   <double>A</double>
  </void>
  <void method="put">
   <string>b</string>
   <double>B</double>
  </void>
  <void method="put">
   <string>c</string>
   <float>C</float>
  </void>
  <void method="put">
   <string>d</string>
   <float>1628080.2</float>
  </void>
  <void method="put">
   <string>e</string>
   <double>4.9E-324</double>
  </void>
  <void method="put">
   <string>f</string>
   <double>F</double>
  </void>
 </object>
</java>
"#;
    let jdk17 = head
        .replace("VERSION", "17.0.15")
        .replace(">A<", ">9.999999999999999E22<")
        .replace(">B<", ">2.82879384806159008E17<")
        .replace(">C<", ">4.58910975E18<")
        .replace(">F<", ">1.0E-322<");
    let jdk25 = head
        .replace("VERSION", "25.0.3")
        .replace(">A<", ">1.0E23<")
        .replace(">B<", ">2.82879384806159E17<")
        .replace(">C<", ">4.5891097E18<")
        .replace(">F<", ">9.9E-323<");
    // We write JDK 19+ digits whatever the version attribute; both forms decode.
    assert_eq!(encode(&nums(), MapClass::LinkedHashMap, "25.0.3"), jdk25);
    assert_same(&decode(&jdk17).unwrap(), &nums());
    assert_same(&decode(&jdk25).unwrap(), &nums());
}

// ---- decoding what Java (or a tolerant reading of it) may hold ----

fn wrap(class: &str, body: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<java version=\"1.8.0_392\" \
             class=\"java.beans.XMLDecoder\">\n <object class=\"{class}\">\n{body} </object>\n</java>\n"
    )
}

fn put(key: &str, value_xml: &str) -> String {
    format!("  <void method=\"put\">\n   <string>{key}</string>\n   {value_xml}\n  </void>\n")
}

fn decode_one(value_xml: &str) -> Result<DetailValue, DetailsError> {
    let d = decode(&wrap("java.util.LinkedHashMap", &put("k", value_xml)))?;
    assert_eq!(d.len(), 1);
    Ok(d.into_iter()
        .next()
        .map(|(_, v)| v)
        .unwrap_or(DetailValue::Null))
}

#[test]
fn decode_character_references_and_char_elements() {
    let cases = [
        ("<string>a&#13;b</string>", "a\rb"),
        ("<string>a&#xD;b&#x41;</string>", "a\rbA"),
        ("<string>a\r\nb\rc</string>", "a\nb\nc"), // raw CR is XML line-end normalized
        (r##"<string>a<char code="#1"/>b</string>"##, "a\u{1}b"),
        (
            r##"<string><char code="#1f"/><char code="#1F"/></string>"##,
            "\u{1f}\u{1f}",
        ),
        (
            r#"<string><char code="31"/><char code="0x1f"/></string>"#,
            "\u{1f}\u{1f}",
        ),
        (r##"<string><char code="#fffe"/></string>"##, "\u{fffe}"),
        (
            r##"<string><char code="#d83d"/><char code="#de00"/></string>"##,
            "😀",
        ),
        (r##"<string>x<char code="#d800"/>y</string>"##, "x\u{fffd}y"),
        ("<string><char>&amp;</char></string>", "&"),
        ("<string/>", ""),
        ("<string></string>", ""),
        ("<string><![CDATA[<raw>]]></string>", "<raw>"),
        ("<string>a<!-- note -->b</string>", "ab"),
    ];
    for (xml, expected) in cases {
        assert_eq!(decode_one(xml).unwrap(), s(expected), "{xml}");
    }
}

#[test]
fn decode_all_map_classes_and_versions() {
    let body = put("KEYALIAS", "<string>signKey</string>");
    for class in [
        "org.cesecore.util.Base64PutHashMap",
        "java.util.LinkedHashMap",
        "java.util.HashMap",
        "java.util.TreeMap",
    ] {
        let xml = wrap(class, &body);
        assert_eq!(
            decode(&xml).unwrap(),
            vec![entry("KEYALIAS", s("signKey"))],
            "{class}"
        );
        for version in ["11.0.2", "21.0.4", "1.6.0_45"] {
            let other = xml.replace("1.8.0_392", version);
            assert_eq!(
                decode(&other).unwrap(),
                vec![entry("KEYALIAS", s("signKey"))]
            );
        }
    }
    // No XML declaration, BOM, single-quoted attributes, comments: still XML, still accepted.
    let bare = "\u{feff}<!-- x --><java version='17'><object class='java.util.HashMap'>\
                    <void method='put'><string>a</string><int>1</int></void></object></java>";
    assert_eq!(decode(bare).unwrap(), vec![entry("a", DetailValue::Int(1))]);
}

#[test]
fn decode_scalars_as_java_reads_them() {
    use DetailValue as V;
    let cases = [
        ("<int>0x10</int>", V::Int(16)),
        ("<int>#10</int>", V::Int(16)),
        ("<int>010</int>", V::Int(8)),
        ("<int>-2147483648</int>", V::Int(i32::MIN)),
        ("<long>-9223372036854775808</long>", V::Long(i64::MIN)),
        ("<boolean>TRUE</boolean>", V::Bool(true)),
        ("<true/>", V::Bool(true)),
        ("<false/>", V::Bool(false)),
        ("<byte>-3</byte>", V::Int(-3)),
        ("<short>300</short>", V::Int(300)),
        ("<char>x</char>", s("x")),
        (r##"<char code="#1"/>"##, s("\u{1}")),
        ("<double>1e3</double>", V::Double(1000.0)),
        ("<double> 2.5d </double>", V::Double(2.5)),
        ("<double>Infinity</double>", V::Double(f64::INFINITY)),
        ("<double>.5</double>", V::Double(0.5)),
        ("<float>0.1</float>", V::Float(0.1)),
        ("<float>-Infinity</float>", V::Float(f32::NEG_INFINITY)),
        ("<null></null>", V::Null),
        (
            "<class>java.lang.Integer</class>",
            V::Class("java.lang.Integer".into()),
        ),
    ];
    for (xml, expected) in cases {
        assert_eq!(decode_one(xml).unwrap(), expected, "{xml}");
    }
    assert!(matches!(decode_one("<double>NaN</double>"), Ok(V::Double(d)) if d.is_nan()));
}

#[test]
fn decode_nested_maps_lists_and_shared_references() {
    use DetailValue as V;
    // Verbatim shape of JDK 17 output when one list/date/map instance is put twice.
    let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<java version="17.0.15" class="java.beans.XMLDecoder">
 <object class="java.util.LinkedHashMap">
  <void method="put">
   <string>l1</string>
   <object class="java.util.ArrayList" id="ArrayList0">
    <void method="add">
     <string>x</string>
    </void>
   </object>
  </void>
  <void method="put">
   <string>l2</string>
   <object idref="ArrayList0"/>
  </void>
  <void method="put">
   <string>d1</string>
   <object class="java.util.Date" id="Date0">
    <long>5</long>
   </object>
  </void>
  <void method="put">
   <string>d2</string>
   <object idref="Date0"/>
  </void>
  <void method="put">
   <string>n1</string>
   <object class="java.util.LinkedHashMap" id="LinkedHashMap0">
    <void method="put">
     <string>x</string>
     <object class="java.util.ArrayList">
      <void method="add">
       <object class="java.util.HashMap"/>
      </void>
     </object>
    </void>
   </object>
  </void>
  <void method="put">
   <string>li</string>
   <object class="java.util.ArrayList">
    <void method="add">
     <object idref="LinkedHashMap0"/>
    </void>
    <void method="add">
     <object idref="LinkedHashMap0"/>
    </void>
   </object>
  </void>
 </object>
</java>
"#;
    let inner = V::Map(vec![entry("x", V::List(vec![V::Map(vec![])]))]);
    assert_eq!(
        decode(xml).unwrap(),
        vec![
            entry("l1", V::List(vec![s("x")])),
            entry("l2", V::List(vec![s("x")])),
            entry("d1", V::Date(5)),
            entry("d2", V::Date(5)),
            entry("n1", inner.clone()),
            entry("li", V::List(vec![inner.clone(), inner])),
        ]
    );
}

#[test]
fn decode_repeated_key_keeps_first_position_last_value() {
    let body = put("a", "<int>1</int>") + &put("b", "<int>2</int>") + &put("a", "<int>3</int>");
    let d = decode(&wrap("java.util.LinkedHashMap", &body)).unwrap();
    assert_eq!(
        d,
        vec![
            entry("a", DetailValue::Int(3)),
            entry("b", DetailValue::Int(2))
        ]
    );
}

// ---- errors ----

fn err(xml: &str) -> String {
    match decode(xml) {
        Ok(d) => panic!("expected an error for {xml}, got {d:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn errors_are_specific() {
    let lhm = "java.util.LinkedHashMap";
    let cases: Vec<(String, &str)> = vec![
        ("not xml at all".into(), "malformed"),
        ("".into(), "no root element"),
        (
            "<java><object class=\"java.util.HashMap\">".into(),
            "malformed",
        ),
        (
            "<java><object class=\"java.util.HashMap\"></java>".into(),
            "malformed",
        ),
        ("<map/>".into(), "expected <java>"),
        ("<java/>".into(), "expected <java>"),
        ("<java></java>".into(), "found nothing"),
        ("<java><string>x</string></java>".into(), "found a string"),
        (
            "<java><object class=\"java.util.ArrayList\"/></java>".into(),
            "found a list",
        ),
        (wrap(lhm, &put("k", "<foo/>")), "element <foo>"),
        (
            wrap(lhm, &put("k", "<string><b>x</b></string>")),
            "element <b> inside <string>",
        ),
        (wrap("java.util.Properties", ""), "java.util.Properties"),
        (
            wrap(lhm, &put("k", "<object class=\"java.io.File\"/>")),
            "java.io.File",
        ),
        (
            wrap(
                lhm,
                "  <void method=\"put\"><int>1</int><int>2</int></void>\n",
            ),
            "map key that is an int",
        ),
        (
            wrap(lhm, "  <void method=\"put\"><string>k</string></void>\n"),
            "needs 2 argument(s), has 1",
        ),
        (
            wrap(lhm, "  <void method=\"add\"><string>k</string></void>\n"),
            "method=\"add\"",
        ),
        (wrap(lhm, "  <void property=\"x\"/>\n"), "property=\"x\""),
        (wrap(lhm, "  text\n"), "unexpected text"),
        (
            wrap(lhm, &put("k", "<int>12x</int>")),
            "bad <int> value \"12x\"",
        ),
        (wrap(lhm, &put("k", "<int>2147483648</int>")), "bad <int>"),
        (wrap(lhm, &put("k", "<int/>")), "bad <int> value \"\""),
        (
            wrap(lhm, &put("k", "<double>1.0.0</double>")),
            "bad <double>",
        ),
        (
            wrap(lhm, &put("k", "<double>0x1p3</double>")),
            "bad <double>",
        ),
        (
            wrap(lhm, &put("k", "<boolean>yes</boolean>")),
            "bad <boolean>",
        ),
        (
            wrap(lhm, &put("k", r#"<string><char code="zz"/></string>"#)),
            "bad <char> code",
        ),
        (wrap(lhm, &put("k", "<char>ab</char>")), "one UTF-16 unit"),
        (
            wrap(lhm, &put("k", "<object idref=\"X0\"/>")),
            "idref \"X0\"",
        ),
        (wrap(lhm, &put("k", "<string>&nbsp;</string>")), "malformed"),
        (
            wrap(lhm, &put("k", "<object class=\"java.util.Date\"/>")),
            "without millis",
        ),
        (
            wrap(lhm, &put("k", "<string x=\"1\">a</string>")),
            "attribute x=\"1\"",
        ),
        ("<!DOCTYPE java><java/>".into(), "DOCTYPE"),
        (format!("{}<x/>", wrap(lhm, "")), "content after </java>"),
    ];
    for (xml, needle) in cases {
        let message = err(&xml);
        assert!(
            message.contains(needle),
            "{xml:?}: message {message:?} lacks {needle:?}"
        );
    }
}

#[test]
fn error_variants() {
    assert!(matches!(
        decode("<a><b></a>"),
        Err(DetailsError::Malformed { .. })
    ));
    assert!(matches!(
        decode("<java><string/></java>"),
        Err(DetailsError::NotAMap { .. })
    ));
    let unknown = wrap("java.util.HashMap", &put("k", "<foo/>"));
    assert!(
        matches!(decode(&unknown), Err(DetailsError::Unsupported { element, .. }) if element == "element <foo>")
    );
}

#[test]
fn decode_limits_depth_and_reference_expansion() {
    let open = "<void method=\"add\"><object class=\"java.util.ArrayList\">";
    let close = "</object></void>";
    let n = MAX_DEPTH + 1;
    let body = format!(
        "<void method=\"put\"><string>k</string><object class=\"java.util.ArrayList\">{}{}</object></void>",
        open.repeat(n),
        close.repeat(n)
    );
    assert!(matches!(
        decode(&wrap("java.util.HashMap", &body)),
        Err(DetailsError::TooDeep { .. })
    ));

    // Each list holds the previous one twice: 2^30 values from a few kilobytes.
    let mut body = String::from(
        "<void method=\"put\"><string>l0</string><object class=\"java.util.ArrayList\" id=\"L0\"/></void>",
    );
    for i in 1..=30 {
        body += &format!(
            "<void method=\"put\"><string>l{i}</string><object class=\"java.util.ArrayList\" id=\"L{i}\">\
                 <void method=\"add\"><object idref=\"L{p}\"/></void><void method=\"add\"><object idref=\"L{p}\"/></void>\
                 </object></void>",
            p = i - 1
        );
    }
    assert!(matches!(
        decode(&wrap("java.util.HashMap", &body)),
        Err(DetailsError::TooLarge { .. })
    ));
}

// ---- display and JSON ----

#[test]
fn display_string_decodes_b64() {
    assert_eq!(display_string("B64:w6XDpMO2"), "åäö");
    // CESeCore's prefix test is `input.toLowerCase().startsWith("b64:")`.
    assert_eq!(display_string("b64:w6XDpMO2"), "åäö");
    assert_eq!(display_string("b64:dG9rZW46YWRtaW4="), "token:admin");
    // Nothing after the prefix: shown as stored, not as an empty string.
    assert_eq!(display_string("B64:"), "B64:");
    assert_eq!(display_string("B64:not base64!"), "B64:not base64!");
    assert_eq!(display_string("B64:YQ"), "B64:YQ"); // not whole groups of 4
    assert_eq!(display_string("B64:YQ==YQ=="), "B64:YQ==YQ=="); // padding inside
    assert_eq!(display_string("B64:YQ=a"), "B64:YQ=a");
    // Bouncy Castle skips white space and ignores the bits after the last byte.
    assert_eq!(display_string("B64:w6XD\npMO2"), "åäö");
    assert_eq!(display_string("B64: w6XD pMO2 "), "åäö");
    assert_eq!(display_string("B64:YR=="), "a");
    assert_eq!(display_string("B64:YWI="), "ab");
    assert_eq!(display_string("B64:   "), "");
    // Java's new String(bytes, UTF_8) replaces what is not UTF-8.
    assert_eq!(display_string("B64:/w=="), "\u{FFFD}");
    assert_eq!(display_string("B64:Yf9i"), "a\u{FFFD}b");
    assert_eq!(display_string("plain"), "plain");
    assert_eq!(display_string("åäö"), "åäö");
    assert_eq!(display_string("B6"), "B6");
    assert_eq!(display_string(" B64:YQ=="), " B64:YQ==");
}

#[test]
fn base64_put_rule_cases() {
    assert_eq!(base64_put_rule("signKey"), "signKey");
    assert_eq!(base64_put_rule(""), "");
    assert_eq!(base64_put_rule("B64:åäö"), "B64:åäö");
    assert_eq!(base64_put_rule("åäö"), "B64:w6XDpMO2");
    assert_eq!(base64_put_rule("a\tb"), "B64:YQli");
    assert_eq!(base64_put_rule("b64:lower ö"), "B64:YjY0Omxvd2VyIMO2");
    assert_eq!(base64_put_rule(" ~"), " ~");
    assert_eq!(base64_put_rule("\u{7f}"), "B64:fw==");
}

#[test]
fn from_json_maps_types() {
    use DetailValue as V;
    let obj = json!({
        "s": "x", "i": 7, "neg": -2147483648i64, "big": 2147483648i64, "huge": u64::MAX,
        "f": 1.5, "whole": 2.0, "t": true, "n": null,
        "a": [1, "y", [null]], "o": {"k": {"z": 1}}
    });
    let serde_json::Value::Object(obj) = obj else {
        panic!("object")
    };
    assert_eq!(
        from_json(&obj).unwrap(),
        vec![
            entry("s", s("x")),
            entry("i", V::Int(7)),
            entry("neg", V::Int(i32::MIN)),
            entry("big", V::Long(2147483648)),
            entry("huge", V::Double(u64::MAX as f64)),
            entry("f", V::Double(1.5)),
            entry("whole", V::Double(2.0)),
            entry("t", V::Bool(true)),
            entry("n", V::Null),
            entry(
                "a",
                V::List(vec![V::Int(1), s("y"), V::List(vec![V::Null])])
            ),
            entry(
                "o",
                V::Map(vec![entry("k", V::Map(vec![entry("z", V::Int(1))]))])
            ),
        ]
    );
}

#[test]
fn from_json_limits_depth() {
    let mut v = json!(1);
    for _ in 0..MAX_DEPTH {
        v = json!({ "k": v });
    }
    let serde_json::Value::Object(obj) = v else {
        panic!("object")
    };
    assert!(from_json(&obj).is_ok());
    let mut outer = serde_json::Map::new();
    outer.insert("deeper".into(), serde_json::Value::Object(obj));
    assert!(matches!(
        from_json(&outer),
        Err(DetailsError::TooDeep { limit: MAX_DEPTH })
    ));
}

#[test]
fn to_json_for_display() {
    use DetailValue as V;
    let d = vec![
        entry("b64", s("B64:w6XDpMO2")),
        entry("i", V::Int(1)),
        entry("l", V::Long(1 << 40)),
        entry("f", V::Float(0.1)),
        entry("d", V::Double(2.5)),
        entry("nan", V::Double(f64::NAN)),
        entry("inf", V::Float(f32::INFINITY)),
        entry("ninf", V::Double(f64::NEG_INFINITY)),
        entry("date", V::Date(1700000000000)),
        entry("cls", V::Class("java.lang.String".into())),
        entry("null", V::Null),
        entry("list", V::List(vec![s("B64:w6XDpMO2"), V::Bool(false)])),
        entry("map", V::Map(vec![entry("deep", s("B64:YQE="))])),
        entry("lower", s("b64:YQE=")),
    ];
    assert_eq!(
        serde_json::Value::Object(to_json(&d)),
        json!({
            "b64": "åäö", "i": 1, "l": 1099511627776i64, "f": 0.1, "d": 2.5,
            "nan": "NaN", "inf": "Infinity", "ninf": "-Infinity", "date": 1700000000000i64,
            "cls": "java.lang.String", "null": null,
            // Only top-level values are decoded, as Base64GetHashMap.get does.
            "list": ["B64:w6XDpMO2", false], "map": {"deep": "B64:YQE="},
            "lower": "a\u{1}"
        })
    );
}

// ---- property: decode(encode(d)) == d after Java put semantics ----

/// What Java's map would hold after putting `d` in order: repeated keys collapse (first
/// position, last value) at every level; the Base64PutHashMap rule at top level only.
fn as_java_map(d: &Details, base64: bool) -> Details {
    let mut out: Details = Vec::new();
    for (k, v) in d {
        let v = match v {
            DetailValue::String(x) if base64 => {
                DetailValue::String(base64_put_rule(x).into_owned())
            }
            other => as_java_value(other),
        };
        match out.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v,
            None => out.push((k.clone(), v)),
        }
    }
    out
}

fn as_java_value(v: &DetailValue) -> DetailValue {
    match v {
        DetailValue::List(items) => DetailValue::List(items.iter().map(as_java_value).collect()),
        DetailValue::Map(m) => DetailValue::Map(as_java_map(m, false)),
        other => other.clone(),
    }
}

fn text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => any::<char>().prop_map(String::from),
        2 => (0u32..0x20).prop_map(|c| char::from_u32(c).map(String::from).unwrap_or_default()),
        2 => "[ -~]{1,4}",
        1 => prop_oneof![
            Just("<sep/>"), Just("&amp;"), Just("\r\n"), Just("B64:"), Just("]]>"),
            Just("\u{fffe}"), Just("\u{ffff}"), Just("&#13;"), Just("<char code=\"#1\"/>"),
        ]
        .prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|p| p.concat())
}

fn leaf() -> impl Strategy<Value = DetailValue> {
    use DetailValue as V;
    prop_oneof![
        Just(V::Null),
        text().prop_map(V::String),
        any::<i32>().prop_map(V::Int),
        any::<i64>().prop_map(V::Long),
        any::<bool>().prop_map(V::Bool),
        any::<f32>().prop_map(V::Float),
        any::<f64>().prop_map(V::Double),
        prop_oneof![Just(0.1), Just(1.0e23), Just(-0.0), Just(1e7), Just(0.001)]
            .prop_map(V::Double),
        any::<i64>().prop_map(V::Date),
        "[a-z]{1,6}(\\.[A-Z][a-zA-Z0-9$]{0,8}){0,3}".prop_map(V::Class),
    ]
}

fn value() -> impl Strategy<Value = DetailValue> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(DetailValue::List),
            prop::collection::vec((text(), inner), 0..4).prop_map(DetailValue::Map),
        ]
    })
}

pub(super) fn details() -> impl Strategy<Value = Details> {
    // Small key alphabet part of the time, so repeated keys occur.
    let key = prop_oneof![text(), "[ab]"];
    prop::collection::vec((key, value()), 0..6)
}

/// JSON an API client may send (strings without a `B64:` prefix, which display decodes).
fn json_object() -> impl Strategy<Value = serde_json::Map<String, serde_json::Value>> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[^Bb][^\\x00]{0,5}|".prop_map(Value::String),
    ];
    let value = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((".{0,4}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    });
    prop::collection::vec((".{0,4}", value), 0..6).prop_map(|kv| kv.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn round_trip(
        d in details(),
        base64 in any::<bool>(),
        version in prop_oneof![Just("17.0.15"), Just("1.8.0_392"), Just("21.0.4")],
    ) {
        let class = if base64 { MapClass::Base64PutHashMap } else { MapClass::LinkedHashMap };
        let xml = encode(&d, class, version);
        let back = decode(&xml);
        prop_assert!(back.is_ok(), "{:?}\n{}", back, xml);
        let back = back.unwrap_or_default();
        let expected = as_java_map(&d, base64);
        prop_assert!(same_details(&back, &expected), "xml:\n{}\ngot {:?}\nexpected {:?}", xml, back, expected);
        // What is stored re-encodes to the same bytes (the put rule is idempotent).
        prop_assert_eq!(encode(&back, class, version), xml);
    }

    #[test]
    fn json_through_details_is_unchanged(j in json_object()) {
        let d = from_json(&j);
        prop_assert!(d.is_ok());
        prop_assert_eq!(to_json(&d.unwrap_or_default()), j);
    }
}
