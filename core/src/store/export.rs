//! Reading the rows of an export (docs/FORMAT.md section 9): every row matching the criteria,
//! ordered by (nodeId, sequenceNumber, pk), in keyset pages so memory stays bounded however
//! many rows match. The SQL is the same for both drivers; each driver's `read_bounded` (store/sql.rs) runs it.

use super::query::{Criterion, Param, Select, after_cursor, where_clause};

/// Where the previous page ended: its last row's (nodeId, sequenceNumber, pk).
pub type ExportCursor = (String, i64, String);

/// `SELECT ... WHERE <criteria> AND (nodeid, sequencenumber, pk) > (after) ORDER BY nodeid,
/// sequencenumber, pk LIMIT n`. Row values compare the same way in PostgreSQL and SQLite
/// (3.15 and later), and in the same collation as the ORDER BY, so no row is skipped or repeated.
#[cfg(test)]
pub(crate) fn page_sql(
    criteria: &[Criterion],
    after: Option<&ExportCursor>,
    limit: i64,
) -> (String, Vec<Param>) {
    page_parts(criteria, after, limit).plain()
}

/// The parts of an export page's SELECT (see `page_sql`).
pub(crate) fn page_parts(
    criteria: &[Criterion],
    after: Option<&ExportCursor>,
    limit: i64,
) -> Select {
    let (mut conditions, mut params) = where_clause(criteria);
    if let Some((node, seq, pk)) = after {
        if !conditions.is_empty() {
            conditions = format!("({conditions}) AND ");
        }
        let values = [
            Param::Text(node.clone()),
            Param::Int(*seq),
            Param::Text(pk.clone()),
        ];
        let resume = after_cursor("nodeid, sequencenumber, pk", ">", values, &mut params);
        conditions.push_str(&resume);
    }
    Select {
        conditions,
        order: "nodeid, sequencenumber, pk".into(),
        params,
        limit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_continue_after_the_cursor_and_bind_every_value() {
        let c: Vec<Criterion> = vec![
            "eventType EQ x' OR 1=1".parse().unwrap(),
            "customId NULL".parse().unwrap(),
        ];
        let (sql, params) = page_sql(&c, None, 10);
        assert!(
            sql.ends_with("WHERE eventtype = $1 AND customid IS NULL ORDER BY nodeid, sequencenumber, pk LIMIT $2"),
            "{sql}"
        );
        assert_eq!(params.len(), 2);
        let after = ("n1".to_string(), 7, "pk".to_string());
        let (sql, params) = page_sql(&c, Some(&after), 10);
        assert!(
            sql.contains("WHERE (eventtype = $1 AND customid IS NULL) AND (nodeid, sequencenumber, pk) > ($2, $3, $4)")
                && sql.ends_with("LIMIT $5"),
            "{sql}"
        );
        assert_eq!(params[2], Param::Int(7));
        let (sql, params) = page_sql(&[], Some(&after), 3);
        assert!(
            sql.contains("WHERE (nodeid, sequencenumber, pk) > ($1, $2, $3)"),
            "{sql}"
        );
        assert_eq!(params.len(), 4);
        assert!(!page_sql(&[], None, 3).0.contains("WHERE"));
    }
}
