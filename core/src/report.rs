//! Errors as one line for an operator: each cause joined with ": ", a cause whose text the line
//! already holds (a context that repeated its source's message) left out.

/// The error and its causes (`anyhow::Error::chain`, or `Error::source` in turn) as one line.
pub fn one_line<'a>(
    chain: impl IntoIterator<Item = &'a (dyn std::error::Error + 'static)>,
) -> String {
    let mut line = String::new();
    for cause in chain {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || line.contains(text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(text);
    }
    // One line, whatever the messages hold.
    line.replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);

    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    fn chain(e: &E) -> Vec<&(dyn std::error::Error + 'static)> {
        let mut out: Vec<&(dyn std::error::Error + 'static)> = vec![e];
        while let Some(next) = out.last().and_then(|e| e.source()) {
            out.push(next);
        }
        out
    }

    #[test]
    fn causes_are_joined_once() {
        let io = E("No such file or directory (os error 2)", None);
        let ctx = E(
            "cannot read /x/pin.txt: No such file or directory (os error 2)",
            Some(Box::new(io)),
        );
        let top = E("key keyid=3", Some(Box::new(ctx)));
        assert_eq!(
            one_line(chain(&top)),
            "key keyid=3: cannot read /x/pin.txt: No such file or directory (os error 2)"
        );
        let multi = E("first\nsecond", None);
        assert_eq!(one_line(chain(&multi)), "first second");
    }
}
