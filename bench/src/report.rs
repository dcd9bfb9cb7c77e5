//! Results: percentiles, and one JSON line per scenario on stdout for the compare script.

use std::fmt::Write as _;

/// The value at quantile `q` (0..=1) of `sorted`, nearest-rank; 0 when empty.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A flat list of named figures for one scenario run.
#[derive(Debug, Default)]
pub struct Report {
    fields: Vec<(String, Value)>,
}

#[derive(Debug)]
enum Value {
    Num(f64),
    Text(String),
}

impl Report {
    pub fn new(scenario: &str, label: &str) -> Self {
        let mut r = Self::default();
        r.text("scenario", scenario);
        r.text("server", label);
        r
    }

    pub fn num(&mut self, key: &str, value: f64) -> &mut Self {
        self.fields.push((key.into(), Value::Num(value)));
        self
    }

    pub fn text(&mut self, key: &str, value: &str) -> &mut Self {
        self.fields.push((key.into(), Value::Text(value.into())));
        self
    }

    /// The value of numeric field `key`.
    pub fn get(&self, key: &str) -> Option<f64> {
        self.fields.iter().find_map(|(k, v)| match v {
            Value::Num(n) if k == key => Some(*n),
            _ => None,
        })
    }

    /// One JSON object on one line.
    pub fn json(&self) -> String {
        let mut out = String::from("{");
        for (i, (k, v)) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = match v {
                Value::Num(n) if n.is_finite() => write!(out, "\"{k}\":{}", round(*n)),
                Value::Num(_) => write!(out, "\"{k}\":null"),
                Value::Text(t) => write!(out, "\"{k}\":\"{}\"", escape(t)),
            };
        }
        out.push('}');
        out
    }

    /// Prints the JSON line to stdout and a readable line to stderr.
    pub fn emit(&self) {
        println!("{}", self.json());
        let human: Vec<String> = self
            .fields
            .iter()
            .map(|(k, v)| match v {
                Value::Num(n) => format!("{k}={}", round(*n)),
                Value::Text(t) => format!("{k}={t}"),
            })
            .collect();
        eprintln!("{}", human.join(" "));
    }
}

fn round(n: f64) -> f64 {
    (n * 1000.0).round() / 1000.0
}

fn escape(t: &str) -> String {
    t.chars()
        .flat_map(|c| match c {
            '"' => vec!['\\', '"'],
            '\\' => vec!['\\', '\\'],
            c if c.is_control() => vec![' '],
            c => vec![c],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 50);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&[7], 0.99), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn json_line() {
        let mut r = Report::new("idle", "k\"ith");
        r.num("rss_kib", 1.23456);
        assert_eq!(
            r.json(),
            "{\"scenario\":\"idle\",\"server\":\"k\\\"ith\",\"rss_kib\":1.235}"
        );
    }
}
