//! The byte budget of a bounded read (`READ_BUDGET_BYTES`): which rows of a chunk it takes.

/// Rows counted in order against a byte budget: the first always, then each while the total
/// stays within it. The one rule of every bounded read (SQLite counts the sizes it read first,
/// PostgreSQL the rows as they arrive).
pub(crate) struct ReadBudget {
    budget: i64,
    total: i64,
    rows: usize,
}

impl ReadBudget {
    pub(crate) fn new(budget: i64) -> Self {
        ReadBudget {
            budget,
            total: 0,
            rows: 0,
        }
    }

    /// Whether a row of `size` bytes is within the budget; counted if it is.
    pub(crate) fn admit(&mut self, size: i64) -> bool {
        let total = self.total.saturating_add(size);
        if self.rows > 0 && total > self.budget {
            return false;
        }
        self.total = total;
        self.rows += 1;
        true
    }

    /// The bytes of the rows admitted so far.
    pub(crate) fn total(&self) -> i64 {
        self.total
    }
}

/// How many of rows of these sizes (in order) fit in `budget`: at least one, if there is one.
pub(crate) fn rows_within(sizes: &[i64], budget: i64) -> usize {
    let mut b = ReadBudget::new(budget);
    sizes.iter().take_while(|s| b.admit(**s)).count()
}

#[cfg(test)]
mod tests {
    use super::{ReadBudget, rows_within};

    #[test]
    fn a_read_budget_takes_the_first_row_always_then_rows_while_the_total_fits() {
        assert_eq!(rows_within(&[], 10), 0);
        assert_eq!(rows_within(&[20, 1], 10), 1);
        assert_eq!(rows_within(&[3, 3, 3, 5, 1], 10), 3);
        assert_eq!(rows_within(&[5, 5, 1], 10), 2);
        assert_eq!(rows_within(&[i64::MAX, i64::MAX], 10), 1);
        let mut b = ReadBudget::new(10);
        assert!(b.admit(4) && b.admit(6) && !b.admit(1));
        assert_eq!(b.total(), 10);
    }
}
