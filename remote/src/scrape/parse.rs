//! The few lines of the Prometheus text format a load signal needs.

/// Sums the samples of every series named one of `names` in a Prometheus
/// text exposition (`name{labels} value [timestamp]` lines; comments and
/// other metrics skipped). Returns `None` when no series of those names is
/// present or a matching value is not a finite number.
///
/// ```
/// use convoy_remote::scrape::sum_series;
/// let text = "# TYPE q gauge\nq{batcher=\"a\"} 3\nq{batcher=\"b\"} 4\nq_other 9\n";
/// assert_eq!(sum_series(text, &["q"]), Some(7.0));
/// assert_eq!(sum_series(text, &["missing"]), None);
/// ```
pub fn sum_series<S: AsRef<str>>(text: &str, names: &[S]) -> Option<f64> {
    let mut total = 0.0;
    let mut found = false;
    for line in text.lines() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(|c: char| c == '{' || c.is_ascii_whitespace())
            .unwrap_or(line.len());
        let name = &line[..name_end];
        if !names.iter().any(|n| n.as_ref() == name) {
            continue;
        }
        let rest = &line[name_end..];
        // Skip the label set; label values may hold spaces and braces
        // inside quotes.
        let rest = if rest.starts_with('{') {
            match label_set_end(rest) {
                Some(end) => &rest[end..],
                None => return None,
            }
        } else {
            rest
        };
        let value: f64 = rest.split_ascii_whitespace().next()?.parse().ok()?;
        if !value.is_finite() {
            return None;
        }
        total += value;
        found = true;
    }
    found.then_some(total)
}

/// The byte after the closing `}` of a label set starting at `s[0] == '{'`.
fn label_set_end(s: &str) -> Option<usize> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '}' if !in_quotes => return Some(i + 1),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn labels_with_braces_and_spaces_and_timestamps() {
        let text = concat!(
            "# HELP convoy_batcher_queue_depth items queued\n",
            "convoy_batcher_queue_depth{batcher=\"a b}\\\"c\"} 2 1700000000000\n",
            "convoy_batcher_queue_depth 1.5\n",
            "convoy_batcher_queue_depth_total 100\n",
        );
        assert_eq!(sum_series(text, &["convoy_batcher_queue_depth"]), Some(3.5));
    }

    #[test]
    fn a_broken_or_infinite_value_is_no_value() {
        assert_eq!(sum_series("q{a=\"1\" 3\n", &["q"]), None);
        assert_eq!(sum_series("q +Inf\n", &["q"]), None);
        assert_eq!(sum_series("q abc\n", &["q"]), None);
    }

    proptest! {
        #[test]
        fn never_panics(text in ".{0,400}") {
            let _ = sum_series(&text, &["q", "convoy_batcher_queue_depth"]);
        }

        #[test]
        fn sums_what_it_was_given(values in proptest::collection::vec(0u32..10_000, 0..20)) {
            let text: String = values
                .iter()
                .enumerate()
                .map(|(i, v)| format!("# a comment\nq{{replica=\"{i}\"}} {v}\nother {v}\n"))
                .collect();
            let expected = (!values.is_empty()).then(|| values.iter().map(|v| f64::from(*v)).sum::<f64>());
            prop_assert_eq!(sum_series(&text, &["q"]), expected);
        }
    }
}
