//! Query criteria (docs/API.md "GET /api/v1/events"): `<field> <OP> <value>`, ANDed; order and
//! keyset cursors.
//! The SQL is built from fixed column names and placeholders only: values are always bound.

use std::fmt;
use std::str::FromStr;

/// A column a criterion may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    AdditionalDetails,
    AuthToken,
    CustomId,
    EventStatus,
    EventType,
    Module,
    NodeId,
    SearchDetail1,
    SearchDetail2,
    SequenceNumber,
    Service,
    TimeStamp,
}

pub const FIELD_NAMES: [&str; 12] = [
    "additionalDetails",
    "authToken",
    "customId",
    "eventStatus",
    "eventType",
    "module",
    "nodeId",
    "searchDetail1",
    "searchDetail2",
    "sequenceNumber",
    "service",
    "timeStamp",
];

impl Field {
    const ALL: [Field; 12] = [
        Field::AdditionalDetails,
        Field::AuthToken,
        Field::CustomId,
        Field::EventStatus,
        Field::EventType,
        Field::Module,
        Field::NodeId,
        Field::SearchDetail1,
        Field::SearchDetail2,
        Field::SequenceNumber,
        Field::Service,
        Field::TimeStamp,
    ];

    pub fn name(self) -> &'static str {
        FIELD_NAMES[Field::ALL.iter().position(|f| *f == self).unwrap_or(0)]
    }

    /// The column in SQL (lower-case works in both PostgreSQL and SQLite).
    fn column(self) -> &'static str {
        match self {
            Field::AdditionalDetails => "additionaldetails",
            Field::AuthToken => "authtoken",
            Field::CustomId => "customid",
            Field::EventStatus => "eventstatus",
            Field::EventType => "eventtype",
            Field::Module => "module",
            Field::NodeId => "nodeid",
            Field::SearchDetail1 => "searchdetail1",
            Field::SearchDetail2 => "searchdetail2",
            Field::SequenceNumber => "sequencenumber",
            Field::Service => "service",
            Field::TimeStamp => "\"timestamp\"",
        }
    }

    fn is_integer(self) -> bool {
        matches!(self, Field::SequenceNumber | Field::TimeStamp)
    }
}

impl FromStr for Field {
    type Err = CriterionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FIELD_NAMES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(s))
            .map(|i| Field::ALL[i])
            .ok_or_else(|| CriterionError::UnknownField(s.to_string()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Neq,
    Gt,
    Ge,
    Lt,
    Le,
    Like,
    Null,
    NotNull,
}

pub const OP_NAMES: [&str; 9] = [
    "EQ", "NEQ", "GT", "GE", "LT", "LE", "LIKE", "NULL", "NOTNULL",
];

impl Op {
    /// The operator's name as written in a criterion (`EQ`, `NOTNULL`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Op::Eq => "EQ",
            Op::Neq => "NEQ",
            Op::Gt => "GT",
            Op::Ge => "GE",
            Op::Lt => "LT",
            Op::Le => "LE",
            Op::Like => "LIKE",
            Op::Null => "NULL",
            Op::NotNull => "NOTNULL",
        }
    }
}

impl FromStr for Op {
    type Err = CriterionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_uppercase().as_str() {
            "EQ" => Op::Eq,
            "NEQ" => Op::Neq,
            "GT" => Op::Gt,
            "GE" => Op::Ge,
            "LT" => Op::Lt,
            "LE" => Op::Le,
            "LIKE" => Op::Like,
            "NULL" => Op::Null,
            "NOTNULL" => Op::NotNull,
            _ => return Err(CriterionError::UnknownOperator(s.to_string())),
        })
    }
}

/// A bound value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    Text(String),
    Int(i64),
}

/// One `<field> <OP> <value>` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Criterion {
    pub field: Field,
    pub op: Op,
    pub value: Option<Param>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CriterionError {
    #[error("unknown field {0:?}; fields are: {fields}", fields = FIELD_NAMES.join(", "))]
    UnknownField(String),
    #[error("unknown operator {0:?}; operators are: {ops}", ops = OP_NAMES.join(", "))]
    UnknownOperator(String),
    #[error("criterion {0:?} needs the form '<field> <OP> <value>'")]
    Form(String),
    #[error("{field} takes an integer{hint}, not {value:?}")]
    NotAnInteger {
        field: &'static str,
        value: String,
        hint: &'static str,
    },
    #[error("LIKE applies to text fields, not {0}")]
    LikeOnInteger(&'static str),
    #[error("{op} takes no value")]
    UnexpectedValue { op: String },
    /// Stored text never holds NUL (PostgreSQL cannot), so such a value is a client error.
    #[error("the value of {0} contains a NUL character, which no stored value can hold")]
    Nul(&'static str),
    /// In LIKE, `\` escapes the character after it (`\%`, `\_`, `\\`); one at the end escapes
    /// nothing.
    #[error(
        "the LIKE pattern for {0} ends with a single backslash, which escapes nothing; \
         write \\\\ for a literal backslash"
    )]
    TrailingEscape(&'static str),
}

impl FromStr for Criterion {
    type Err = CriterionError;

    /// Parses `eventType EQ PROCESS`, `customId NULL`, `timeStamp GE 2026-01-01T00:00:00Z`.
    /// The value is everything after the operator (it may contain spaces).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let mut parts = s.splitn(3, char::is_whitespace);
        let field: Field = parts
            .next()
            .filter(|f| !f.is_empty())
            .ok_or_else(|| CriterionError::Form(s.to_string()))?
            .parse()?;
        let op_text = parts
            .next()
            .ok_or_else(|| CriterionError::Form(s.to_string()))?;
        let op: Op = op_text.parse()?;
        let rest = parts.next().map(str::trim_start);
        Criterion::new(field, op, rest)
    }
}

impl Criterion {
    pub fn new(field: Field, op: Op, value: Option<&str>) -> Result<Self, CriterionError> {
        let value = match op {
            Op::Null | Op::NotNull => {
                if value.is_some_and(|v| !v.is_empty()) {
                    return Err(CriterionError::UnexpectedValue {
                        op: format!("{op:?}").to_uppercase(),
                    });
                }
                None
            }
            _ => {
                let v = value.ok_or_else(|| {
                    CriterionError::Form(format!("{} {:?}", field.name(), op).to_uppercase())
                })?;
                if field.is_integer() {
                    if op == Op::Like {
                        return Err(CriterionError::LikeOnInteger(field.name()));
                    }
                    Some(Param::Int(parse_integer(field, v)?))
                } else {
                    if v.contains('\0') {
                        return Err(CriterionError::Nul(field.name()));
                    }
                    let escapes = v.chars().rev().take_while(|c| *c == '\\').count();
                    if op == Op::Like && escapes % 2 == 1 {
                        return Err(CriterionError::TrailingEscape(field.name()));
                    }
                    Some(Param::Text(v.to_string()))
                }
            }
        };
        Ok(Criterion { field, op, value })
    }
}

fn parse_integer(field: Field, v: &str) -> Result<i64, CriterionError> {
    if let Ok(n) = v.trim().parse::<i64>() {
        return Ok(n);
    }
    if field == Field::TimeStamp
        && let Some(ms) = crate::format::time::parse_iso8601_millis(v.trim())
    {
        return Ok(ms);
    }
    Err(CriterionError::NotAnInteger {
        field: field.name(),
        value: v.to_string(),
        hint: if field == Field::TimeStamp {
            " (epoch milliseconds) or an ISO-8601 date"
        } else {
            ""
        },
    })
}

impl fmt::Display for Criterion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.field.name(), self.op)?;
        match &self.value {
            Some(Param::Text(t)) => write!(f, " {t}"),
            Some(Param::Int(i)) => write!(f, " {i}"),
            None => Ok(()),
        }
    }
}

/// The direction of the order key (timeStamp, nodeId, sequenceNumber).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Order {
    /// Newest first (the default).
    #[default]
    Desc,
    Asc,
}

impl Order {
    pub fn name(self) -> &'static str {
        match self {
            Order::Desc => "desc",
            Order::Asc => "asc",
        }
    }
}

impl FromStr for Order {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s.to_ascii_lowercase().as_str() {
            "desc" => Ok(Order::Desc),
            "asc" => Ok(Order::Asc),
            _ => Err(()),
        }
    }
}

/// Where a page ended: the order it was read in and the order key of its last row. A query
/// with it returns the rows strictly after that row, so rows added meanwhile never shift a page
/// (keyset pagination). It does not carry the criteria: the caller passes the same ones again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub order: Order,
    pub time_stamp: i64,
    pub node_id: String,
    pub sequence_number: i64,
}

/// The cursor's wire form (version 1), before base64url.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CursorV1 {
    v: u8,
    o: String,
    t: i64,
    n: String,
    s: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cursor {0:?} is not a cursor this server issued")]
pub struct CursorError(pub String);

impl Cursor {
    /// The cursor after `row` in `order`.
    pub fn after(order: Order, row: &crate::format::record::AuditRecord) -> Self {
        Cursor {
            order,
            time_stamp: row.time_stamp,
            node_id: row.node_id.clone(),
            sequence_number: row.sequence_number,
        }
    }

    /// Opaque text: base64url (no padding) of a small versioned JSON object.
    pub fn encode(&self) -> String {
        use base64::Engine;
        let wire = CursorV1 {
            v: 1,
            o: self.order.name().to_string(),
            t: self.time_stamp,
            n: self.node_id.clone(),
            s: self.sequence_number,
        };
        // Serializing a struct of strings and integers cannot fail.
        let json = serde_json::to_vec(&wire).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    pub fn decode(text: &str) -> Result<Self, CursorError> {
        use base64::Engine;
        let bad = || CursorError(text.chars().take(100).collect());
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| bad())?;
        let wire: CursorV1 = serde_json::from_slice(&json).map_err(|_| bad())?;
        // A node id with NUL was never issued (and PostgreSQL could not compare it).
        if wire.v != 1 || wire.n.contains('\0') {
            return Err(bad());
        }
        Ok(Cursor {
            order: wire.o.parse().map_err(|_| bad())?,
            time_stamp: wire.t,
            node_id: wire.n,
            sequence_number: wire.s,
        })
    }
}

/// A query: criteria ANDed, in `order`, at most `limit` rows, after `after` if given.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub criteria: Vec<Criterion>,
    pub limit: i64,
    pub order: Order,
    /// The previous page's last row; its `order` is ignored here (the caller checks it matches).
    pub after: Option<Cursor>,
}

/// The criteria as SQL conditions joined with ` AND ` (empty for none), with `$1`, `$2`, ...
/// placeholders for their values.
pub(crate) fn where_clause(criteria: &[Criterion]) -> (String, Vec<Param>) {
    let mut sql = String::new();
    let mut params = Vec::new();
    for (i, c) in criteria.iter().enumerate() {
        if i > 0 {
            sql.push_str(" AND ");
        }
        let col = c.field.column();
        let op = match c.op {
            Op::Eq => "=",
            Op::Neq => "<>",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Like => "LIKE",
            Op::Null => {
                sql.push_str(&format!("{col} IS NULL"));
                continue;
            }
            Op::NotNull => {
                sql.push_str(&format!("{col} IS NOT NULL"));
                continue;
            }
        };
        if let Some(v) = &c.value {
            params.push(v.clone());
            sql.push_str(&format!("{col} {op} ${}", params.len()));
            // The escape character named, so both databases read `\` alike (PostgreSQL's
            // default; SQLite has none unless told).
            if c.op == Op::Like {
                sql.push_str(" ESCAPE '\\'");
            }
        }
    }
    (sql, params)
}

/// Builds `SELECT ... WHERE ... ORDER BY timestamp DESC, ... LIMIT $n` with `$N` placeholders,
/// accepted by both PostgreSQL and SQLite. After a cursor, a row-value comparison (SQLite >=
/// 3.15) keeps exactly the rows past the cursor's row in the order key.
#[cfg(test)]
pub(crate) fn build_select(query: &Query) -> (String, Vec<Param>) {
    select_parts(query).plain()
}

/// `(columns) cmp ($n+1, $n+2, $n+3)`: the keyset condition that resumes after a cursor, with
/// its three values appended to `params`.
pub(super) fn after_cursor(
    columns: &str,
    cmp: &str,
    values: [Param; 3],
    params: &mut Vec<Param>,
) -> String {
    let n = params.len();
    params.extend(values);
    format!("({columns}) {cmp} (${}, ${}, ${})", n + 1, n + 2, n + 3)
}

/// The parts of a query's SELECT: its conditions, its order and its limit. Public so that the
/// search benchmark (tests/src/bin/auditseal-query-bench.rs) EXPLAINs the statements the store
/// runs, not a copy of them.
pub fn select_parts(query: &Query) -> Select {
    let (mut conditions, mut params) = where_clause(&query.criteria);
    let (cmp, dir) = match query.order {
        Order::Desc => ("<", "DESC"),
        Order::Asc => (">", "ASC"),
    };
    if let Some(c) = &query.after {
        if !conditions.is_empty() {
            conditions.push_str(" AND ");
        }
        let values = [
            Param::Int(c.time_stamp),
            Param::Text(c.node_id.clone()),
            Param::Int(c.sequence_number),
        ];
        let columns = "\"timestamp\", nodeid, sequencenumber";
        conditions.push_str(&after_cursor(columns, cmp, values, &mut params));
    }
    Select {
        conditions,
        order: format!("\"timestamp\" {dir}, nodeid {dir}, sequencenumber {dir}"),
        params,
        limit: query.limit,
    }
}

/// A SELECT of rows of `auditrecorddata`, kept in parts so that it can be run plain or bounded
/// by bytes (`Store::query`, `Store::export_page`).
#[derive(Debug, Clone)]
pub struct Select {
    /// The WHERE conditions without the keyword (empty: none), with `$1..` placeholders.
    pub conditions: String,
    /// The ORDER BY list.
    pub order: String,
    pub params: Vec<Param>,
    pub limit: i64,
}

impl Select {
    fn table_and_filter(&self) -> String {
        if self.conditions.is_empty() {
            "FROM auditrecorddata".into()
        } else {
            format!("FROM auditrecorddata WHERE {}", self.conditions)
        }
    }

    /// `SELECT <columns> ... ORDER BY ... LIMIT $n`.
    #[cfg(test)]
    pub fn plain(&self) -> (String, Vec<Param>) {
        self.with_limit(self.limit)
    }

    /// The plain SELECT with another limit.
    pub fn with_limit(&self, limit: i64) -> (String, Vec<Param>) {
        let mut params = self.params.clone();
        params.push(Param::Int(limit));
        let sql = format!(
            "SELECT {} {} ORDER BY {} LIMIT ${}",
            super::COLUMNS,
            self.table_and_filter(),
            self.order,
            params.len()
        );
        (sql, params)
    }

    /// The sizes of the rows the plain SELECT returns (`ROW_BYTES`), in its order; reads no
    /// value in SQLite (`octet_length`).
    pub fn sizes(&self) -> (String, Vec<Param>) {
        let mut params = self.params.clone();
        params.push(Param::Int(self.limit));
        let sql = format!(
            "SELECT {} {} ORDER BY {} LIMIT ${}",
            super::ROW_BYTES,
            self.table_and_filter(),
            self.order,
            params.len()
        );
        (sql, params)
    }

    /// One query (PostgreSQL): the plain SELECT's rows that start within `budget` bytes, by a
    /// running sum of their sizes that de-TOASTs no value, always the first row; each row also
    /// carries `rows_in_limit`, how many rows the plain SELECT has, so a cut page is told from
    /// the end in the same snapshot.
    pub fn bounded(&self, budget: i64) -> (String, Vec<Param>) {
        let mut params = self.params.clone();
        params.push(Param::Int(self.limit));
        params.push(Param::Int(budget));
        let sql = format!(
            "SELECT {cols}, rows_in_limit FROM (SELECT *, SUM({size}) OVER (ORDER BY {order} \
             ROWS UNBOUNDED PRECEDING) - {size} AS bytes_before, COUNT(*) OVER () AS \
             rows_in_limit FROM (SELECT * {from} ORDER BY {order} LIMIT ${l}) l) c \
             WHERE bytes_before < ${b} ORDER BY {order}",
            cols = super::COLUMNS,
            size = super::ROW_BYTES,
            order = self.order,
            from = self.table_and_filter(),
            l = params.len() - 1,
            b = params.len(),
        );
        (sql, params)
    }
}

/// `SELECT COUNT(*)` of the rows matching every criterion (the same conditions as a query).
pub fn build_count(criteria: &[Criterion]) -> (String, Vec<Param>) {
    let (conditions, params) = where_clause(criteria);
    let mut sql = String::from("SELECT COUNT(*) FROM auditrecorddata");
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions);
    }
    (sql, params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_criteria() {
        let c: Criterion = "eventType EQ PROCESS".parse().unwrap();
        assert_eq!(c.field, Field::EventType);
        assert_eq!(c.value, Some(Param::Text("PROCESS".into())));
        let c: Criterion = "searchDetail2 LIKE %worker 1%".parse().unwrap();
        assert_eq!(c.value, Some(Param::Text("%worker 1%".into())));
        let c: Criterion = "customId NULL".parse().unwrap();
        assert_eq!(c.value, None);
        let c: Criterion = "timeStamp GE 1970-01-01T00:00:01Z".parse().unwrap();
        assert_eq!(c.value, Some(Param::Int(1000)));
        let c: Criterion = "sequenceNumber lt 5".parse().unwrap();
        assert_eq!((c.op, c.value), (Op::Lt, Some(Param::Int(5))));
    }

    #[test]
    fn rejects_bad_criteria_with_names() {
        let e = "bogus EQ 1".parse::<Criterion>().unwrap_err().to_string();
        assert!(e.contains("bogus") && e.contains("eventType"), "{e}");
        let e = "eventType SORTOF 1"
            .parse::<Criterion>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("SORTOF") && e.contains("NOTNULL"), "{e}");
        assert!("sequenceNumber EQ x".parse::<Criterion>().is_err());
        assert!("timeStamp LIKE 1".parse::<Criterion>().is_err());
        assert!("customId NULL x".parse::<Criterion>().is_err());
        assert!("eventType EQ".parse::<Criterion>().is_err());
    }

    #[test]
    fn nul_and_a_dangling_like_escape_are_refused() {
        for text in ["eventType EQ a\0b", "customId LIKE %\0", "module NEQ \0"] {
            let e = text.parse::<Criterion>().unwrap_err();
            assert!(matches!(e, CriterionError::Nul(_)), "{text:?}: {e}");
            assert!(e.to_string().contains("NUL"), "{e}");
        }
        for text in [
            "eventType LIKE a\\",
            "eventType LIKE a\\\\\\",
            "service LIKE \\",
        ] {
            let e = text.parse::<Criterion>().unwrap_err();
            assert!(
                matches!(e, CriterionError::TrailingEscape(_)),
                "{text:?}: {e}"
            );
        }
        // An escaped backslash is a literal one; outside LIKE a backslash is just a character.
        for text in [
            "eventType LIKE a\\\\",
            "eventType LIKE 100\\%",
            "eventType EQ a\\",
        ] {
            assert!(text.parse::<Criterion>().is_ok(), "{text:?}");
        }
        let (sql, _) = build_count(&["eventType LIKE a%".parse().unwrap()]);
        assert!(sql.ends_with("eventtype LIKE $1 ESCAPE '\\'"), "{sql}");
    }

    #[test]
    fn values_are_never_in_the_sql() {
        let q = Query {
            criteria: vec!["eventType EQ x' OR '1'='1".parse().unwrap()],
            limit: 10,
            ..Query::default()
        };
        let (sql, params) = build_select(&q);
        assert!(!sql.contains("OR '1'"), "{sql}");
        assert_eq!(params[0], Param::Text("x' OR '1'='1".into()));
        assert!(
            sql.contains("eventtype = $1") && sql.ends_with("LIMIT $2"),
            "{sql}"
        );
    }

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        for order in [Order::Desc, Order::Asc] {
            let c = Cursor {
                order,
                time_stamp: 1_764_072_000_123,
                node_id: "node 1/\"x\"' OR 1=1".into(),
                sequence_number: i64::MAX,
            };
            let text = c.encode();
            assert!(
                text.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{text}"
            );
            assert_eq!(Cursor::decode(&text).unwrap(), c);
        }
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        for bad in [
            String::new(),
            "!!".into(),
            "eyJ2Ijox".into(),
            b64(r#"{"v":2,"o":"asc","t":1,"n":"a","s":1}"#),
            b64(r#"{"v":1,"o":"up","t":1,"n":"a","s":1}"#),
            b64(r#"{"v":1,"o":"asc","t":1,"n":"a","s":1,"x":0}"#),
            b64(r#"{"v":1,"o":"asc","t":"1","n":"a","s":1}"#),
            b64(r#"{"v":1,"o":"asc","t":1,"n":"a\u0000","s":1}"#),
        ] {
            assert!(Cursor::decode(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cursor_is_bound_and_follows_the_order() {
        let cursor = Cursor {
            order: Order::Asc,
            time_stamp: 5,
            node_id: "n' --".into(),
            sequence_number: 7,
        };
        let q = Query {
            criteria: vec!["eventType EQ A".parse().unwrap()],
            limit: 3,
            order: Order::Asc,
            after: Some(cursor),
        };
        let (sql, params) = build_select(&q);
        assert!(
            sql.contains(
                "eventtype = $1 AND (\"timestamp\", nodeid, sequencenumber) > ($2, $3, $4)"
            ) && sql.ends_with("sequencenumber ASC LIMIT $5"),
            "{sql}"
        );
        assert!(!sql.contains("n'"), "{sql}");
        assert_eq!(params[2], Param::Text("n' --".into()));
        let (sql, _) = build_select(&Query {
            order: Order::Desc,
            ..q
        });
        assert!(
            sql.contains(") < ($2") && sql.contains("DESC LIMIT"),
            "{sql}"
        );
        let (sql, params) = build_count(&["customId NULL".parse().unwrap()]);
        assert_eq!(
            sql,
            "SELECT COUNT(*) FROM auditrecorddata WHERE customid IS NULL"
        );
        assert!(params.is_empty());
    }
}
