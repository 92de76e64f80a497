//! Reading PromQL and the Prometheus text format far enough to tell which metrics, labels and
//! label values a query needs, and whether a notifier's /metrics has them.

use std::collections::{BTreeMap, BTreeSet};

/// Labels every scraped series gets from Prometheus, and the series it makes for every target.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];
const PROMETHEUS_SERIES: [&str; 1] = ["up"];

/// What a PromQL expression reads.
#[derive(Debug, Default)]
pub struct Reads {
    pub metrics: BTreeSet<String>,
    pub matchers: Vec<LabelMatcher>,
    /// Labels of `by`, `without`, `on` and `ignoring` lists.
    pub grouping: BTreeSet<String>,
}

#[derive(Debug)]
pub struct LabelMatcher {
    pub metric: Option<String>,
    pub label: String,
    pub op: String,
    pub value: String,
}

impl Reads {
    pub fn of(expr: &str) -> Self {
        let s: Vec<char> = expr.chars().collect();
        let mut reads = Self::default();
        // The metric a following `{…}` belongs to.
        let (mut i, mut metric) = (0, None::<String>);
        while i < s.len() {
            match s[i] {
                '"' | '\'' | '`' => (i, metric) = (skip_string(&s, i), None),
                '{' => {
                    let end = closing(&s, i, '}');
                    let found = parse_matchers(&s[i + 1..end], metric.take());
                    reads.matchers.extend(found);
                    i = end + 1;
                }
                '[' => i = closing(&s, i, ']') + 1,
                // A Grafana variable: `$instance`, `${instance}`.
                '$' => i = skip_while(&s, i + 1, |c| word_char(c) || "{}".contains(c)),
                c if c.is_ascii_digit() || c == '.' => {
                    i = skip_while(&s, i, |c| c.is_ascii_alphanumeric() || c == '.');
                    metric = None;
                }
                c if word_char(c) => (i, metric) = reads.word(&s, i),
                c => {
                    if !c.is_whitespace() {
                        metric = None;
                    }
                    i += 1;
                }
            }
        }
        reads
    }

    /// Reads the word at `start`: a label list, a function, an operator or a metric name (then
    /// returned). Returns where reading goes on.
    fn word(&mut self, s: &[char], start: usize) -> (usize, Option<String>) {
        const AGGREGATIONS: &str =
            "sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk";
        const OPERATORS: &str = "and or unless bool offset atan2 group_left group_right inf nan";
        const LISTS: &str = "by without on ignoring group_left group_right";
        let is = |list: &str, word: &str| list.split(' ').any(|w| w == word);
        let end = skip_while(s, start, word_char);
        let word: String = s[start..end].iter().collect();
        let next = skip_while(s, end, char::is_whitespace);
        let opens = s.get(next) == Some(&'(');
        if is(LISTS, &word) && opens {
            let close = closing(s, next, ')');
            let list: String = s[next + 1..close].iter().collect();
            let labels = list.split(',').map(str::trim).filter(|l| !l.is_empty());
            self.grouping.extend(labels.map(String::from));
            (close + 1, None)
        } else if opens || is(AGGREGATIONS, &word) || is(OPERATORS, &word) {
            (end, None)
        } else {
            self.metrics.insert(word.clone());
            (end, Some(word))
        }
    }
}

fn word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The index of the first character from `i` on that is not `keep`.
fn skip_while(s: &[char], mut i: usize, keep: impl Fn(char) -> bool) -> usize {
    while i < s.len() && keep(s[i]) {
        i += 1;
    }
    i
}

/// The index after the string that starts at `open`.
fn skip_string(s: &[char], open: usize) -> usize {
    let mut i = open + 1;
    while i < s.len() && s[i] != s[open] {
        i += if s[i] == '\\' { 2 } else { 1 };
    }
    i + 1
}

/// The index of the `close` that ends the group opened at `open`, skipping strings.
fn closing(s: &[char], open: usize, close: char) -> usize {
    let mut i = open + 1;
    while i < s.len() && s[i] != close {
        i = if matches!(s[i], '"' | '\'' | '`') {
            skip_string(s, i)
        } else {
            i + 1
        };
    }
    assert!(i < s.len(), "unclosed {:?}", s[open]);
    i
}

/// `label op "value", …` (as in a selector or a /metrics sample line).
fn parse_matchers(s: &[char], metric: Option<String>) -> Vec<LabelMatcher> {
    let mut found = Vec::new();
    let mut i = skip_while(s, 0, char::is_whitespace);
    while i < s.len() {
        let label_end = skip_while(s, i, |c| c.is_ascii_alphanumeric() || c == '_');
        let op_start = skip_while(s, label_end, char::is_whitespace);
        let op_end = skip_while(s, op_start, |c| "=!~".contains(c));
        let value = skip_while(s, op_end, char::is_whitespace);
        assert!(
            label_end > i && op_end > op_start && value < s.len(),
            "a matcher in {s:?}"
        );
        let end = skip_string(s, value);
        let raw: String = s[value + 1..end - 1].iter().collect();
        found.push(LabelMatcher {
            metric: metric.clone(),
            label: s[i..label_end].iter().collect(),
            op: s[op_start..op_end].iter().collect(),
            value: raw.replace("\\\"", "\"").replace("\\\\", "\\"),
        });
        i = skip_while(s, end, |c| c == ',' || c.is_whitespace());
    }
    found
}

/// What /metrics exports: each sample name's labels and their values, and each metric's type.
pub struct Exported {
    samples: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    types: BTreeMap<String, String>,
}

impl Exported {
    pub fn parse(text: &str) -> Self {
        let (mut samples, mut types) = (BTreeMap::new(), BTreeMap::new());
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
                types.insert(name.to_string(), kind.to_string());
            } else if !line.starts_with('#') && !line.is_empty() {
                let name_end = line.find(['{', ' ']).unwrap_or(line.len());
                let labels: &mut BTreeMap<String, BTreeSet<String>> =
                    samples.entry(line[..name_end].to_string()).or_default();
                if line[name_end..].starts_with('{') {
                    let s: Vec<char> = line[name_end..].chars().collect();
                    for m in parse_matchers(&s[1..closing(&s, 0, '}')], None) {
                        labels.entry(m.label).or_default().insert(m.value);
                    }
                }
            }
        }
        Self { samples, types }
    }

    /// What `reads` asks for that is not exported.
    pub fn complaints(&self, reads: &Reads) -> Vec<String> {
        let mut complaints = Vec::new();
        for name in &reads.metrics {
            if PROMETHEUS_SERIES.contains(&name.as_str()) {
                continue;
            }
            if !self.samples.contains_key(name) {
                complaints.push(format!("metric {name} is not exported"));
            } else if let Some(base) = name.strip_suffix("_bucket") {
                let kind = self.types.get(base).map(String::as_str);
                if kind != Some("histogram") {
                    complaints.push(format!("{name}, but {base} is a {kind:?}"));
                }
            }
        }
        for m in &reads.matchers {
            let Some(labels) = m.metric.as_ref().and_then(|name| self.samples.get(name)) else {
                continue;
            };
            if TARGET_LABELS.contains(&m.label.as_str()) {
                continue;
            }
            let Some(values) = labels.get(&m.label) else {
                complaints.push(format!("{:?} has no label {}", m.metric, m.label));
                continue;
            };
            // Values compared as written: `outcome="delivered"`, `outcome=~"rejected|retryable"`.
            let literal = (m.value.chars()).all(|c| c.is_ascii_alphanumeric() || "_|".contains(c));
            if literal && matches!(m.op.as_str(), "=" | "=~") {
                let missing: Vec<&str> = (m.value.split('|'))
                    .filter(|v| !values.contains(*v))
                    .collect();
                if !missing.is_empty() {
                    complaints.push(format!(
                        "{:?} {} never takes {missing:?}",
                        m.metric, m.label
                    ));
                }
            }
        }
        let all_labels: BTreeSet<&String> = self.samples.values().flat_map(|l| l.keys()).collect();
        for label in &reads.grouping {
            if !all_labels.contains(label) && !TARGET_LABELS.contains(&label.as_str()) {
                complaints.push(format!("no metric has the label {label}"));
            }
        }
        complaints
    }
}

#[test]
fn the_promql_reader_finds_metrics_not_functions_labels_strings_or_variables() {
    let reads = Reads::of(
        r#"histogram_quantile(0.9, sum by (le, provider) (rate(a_bucket{outcome=~"x|y", s="}"}[$__rate_interval])))
           / on (job) group_left count(b) > 60 * sum without (result) (c offset 5m) or up{job="n"} == bool 1"#,
    );
    assert_eq!(
        reads.metrics,
        ["a_bucket", "b", "c", "up"].map(String::from).into()
    );
    assert_eq!(
        reads.grouping,
        ["job", "le", "provider", "result"].map(String::from).into()
    );
    let matchers: Vec<String> = reads
        .matchers
        .iter()
        .map(|m| format!("{:?} {}{}{}", m.metric, m.label, m.op, m.value))
        .collect();
    assert_eq!(
        matchers,
        [
            "Some(\"a_bucket\") outcome=~x|y",
            "Some(\"a_bucket\") s=}",
            "Some(\"up\") job=n"
        ]
    );
}
