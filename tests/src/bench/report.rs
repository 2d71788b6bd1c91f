//! The benchmark report: one [`Row`] per measured operation (ours and, where
//! there is one, the baseline measured the same way in the same run), one
//! [`Target`] per goal with its ratio and pass/fail mark, printed as tables
//! and written as JSON.
//!
//! A row that could not be measured says why (`unavailable`) instead of
//! showing numbers; a target whose inputs are missing is neither passed nor
//! failed but "n/a" with the reason.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use super::load::Sample;

/// What one operation cost, from the load side and from `/proc`.
#[derive(Debug, Clone, Default)]
pub struct Measure {
    /// Successful operations.
    pub ops: u64,
    /// Failed operations.
    pub errors: u64,
    /// Successful operations per second (wall time).
    pub rate: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Server CPU time (user + system) per successful operation, if measured.
    pub cpu_per_op: Option<Duration>,
}

impl Measure {
    /// From a load sample and the server's CPU time over the run.
    pub fn new(sample: &Sample, cpu: Option<Duration>) -> Self {
        Self {
            ops: sample.ops,
            errors: sample.errors,
            rate: sample.rate(),
            p50: sample.quantile(0.5),
            p99: sample.quantile(0.99),
            cpu_per_op: cpu.and_then(|cpu| {
                u32::try_from(sample.ops)
                    .ok()
                    .filter(|&ops| ops > 0)
                    .map(|ops| cpu / ops)
            }),
        }
    }

    fn json(&self) -> Value {
        json!({
            "ops": self.ops,
            "errors": self.errors,
            "ops_per_second": round(self.rate),
            "p50_us": self.p50.as_micros() as u64,
            "p99_us": self.p99.as_micros() as u64,
            "cpu_us_per_op": self.cpu_per_op.map(|c| round(c.as_secs_f64() * 1e6)),
        })
    }
}

/// One measured operation.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// Short stable id (`check_http_keepalive`).
    pub id: String,
    /// What was measured, for people.
    pub what: String,
    /// The relay's figures (None when unavailable).
    pub ours: Option<Measure>,
    /// The baseline's name and figures, if this operation has one.
    pub baseline: Option<(String, Measure)>,
    /// A value that is not a rate (bytes per mailbox), with its unit.
    pub value: Option<(f64, String)>,
    /// Why the row could not be measured.
    pub unavailable: Option<String>,
    /// Extra context (counts, settings).
    pub note: String,
}

impl Row {
    /// A row with our figures only.
    pub fn ours(id: &str, what: &str, ours: Measure) -> Self {
        Self {
            id: id.into(),
            what: what.into(),
            ours: Some(ours),
            ..Self::default()
        }
    }

    /// A row that could not be measured, and why.
    pub fn unavailable(id: &str, what: &str, why: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            what: what.into(),
            unavailable: Some(why.into()),
            ..Self::default()
        }
    }

    /// Ours / baseline CPU per operation.
    pub fn cpu_ratio(&self) -> Option<f64> {
        let ours = self.ours.as_ref()?.cpu_per_op?;
        let base = self.baseline.as_ref()?.1.cpu_per_op?;
        ratio(ours.as_secs_f64(), base.as_secs_f64())
    }

    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "what": self.what,
            "ours": self.ours.as_ref().map(Measure::json),
            "baseline": self.baseline.as_ref().map(|(name, m)| json!({"name": name, "measure": m.json()})),
            "cpu_ratio_ours_over_baseline": self.cpu_ratio().map(round),
            "value": self.value.as_ref().map(|(v, unit)| json!({"value": round(*v), "unit": unit})),
            "unavailable": self.unavailable,
            "note": self.note,
        })
    }
}

/// A goal: `measured` compared with `limit`.
#[derive(Debug, Clone)]
pub struct Target {
    /// What the goal says.
    pub goal: String,
    /// The measured ratio or value.
    pub measured: Option<f64>,
    /// The limit.
    pub limit: f64,
    /// `true`: measured must be at most the limit; `false`: at least.
    pub at_most: bool,
    /// Extra conditions that must also hold (e.g. 100% delivered), with the
    /// text shown when one does not.
    pub also: Option<(bool, String)>,
    /// Why it is missed or what limits it, or why it could not be measured.
    pub note: String,
}

impl Target {
    /// A target on `measured` (None: could not be measured).
    pub fn new(goal: &str, measured: Option<f64>, limit: f64, at_most: bool) -> Self {
        Self {
            goal: goal.into(),
            measured,
            limit,
            at_most,
            also: None,
            note: String::new(),
        }
    }

    /// Adds a note.
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }

    /// Adds a condition that must hold too.
    pub fn also(mut self, holds: bool, text: impl Into<String>) -> Self {
        self.also = Some((holds, text.into()));
        self
    }

    /// `Some(true)` pass, `Some(false)` fail, `None` not measured.
    pub fn passed(&self) -> Option<bool> {
        let measured = self.measured?;
        let within = if self.at_most {
            measured <= self.limit
        } else {
            measured >= self.limit
        };
        Some(within && self.also.as_ref().is_none_or(|(holds, _)| *holds))
    }

    fn mark(&self) -> &'static str {
        match self.passed() {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "n/a",
        }
    }

    fn json(&self) -> Value {
        json!({
            "goal": self.goal,
            "measured": self.measured.map(round),
            "limit": self.limit,
            "at_most": self.at_most,
            "also": self.also.as_ref().map(|(holds, text)| json!({"holds": holds, "text": text})),
            "passed": self.passed(),
            "note": self.note,
        })
    }
}

/// The whole report.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// `quick` or `full`.
    pub mode: String,
    /// Machine and settings, for context.
    pub context: Vec<(String, String)>,
    /// Measured operations.
    pub rows: Vec<Row>,
    /// Goals.
    pub targets: Vec<Target>,
}

impl Report {
    /// The row with `id`.
    pub fn row(&self, id: &str) -> Option<&Row> {
        self.rows.iter().find(|row| row.id == id)
    }

    /// CPU per op of our side of row `id`, in seconds.
    pub fn cpu(&self, id: &str) -> Option<f64> {
        Some(self.row(id)?.ours.as_ref()?.cpu_per_op?.as_secs_f64())
    }

    /// The plain-text tables.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Connectoid benchmark ({} run)", self.mode);
        for (key, value) in &self.context {
            let _ = writeln!(out, "  {key}: {value}");
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<34} {:>8} {:>6} {:>10} {:>9} {:>9} {:>11} {:>11} {:>8}",
            "operation",
            "ops",
            "errors",
            "ops/s",
            "p50",
            "p99",
            "CPU/op",
            "base CPU/op",
            "ours/base"
        );
        for row in &self.rows {
            if let Some(why) = &row.unavailable {
                let _ = writeln!(out, "{:<34} {why}", row.id);
                continue;
            }
            if let Some((value, unit)) = &row.value {
                let _ = writeln!(out, "{:<34} {value:.1} {unit}  ({})", row.id, row.note);
                continue;
            }
            let Some(ours) = &row.ours else { continue };
            let base = row
                .baseline
                .as_ref()
                .and_then(|(_, m)| m.cpu_per_op)
                .map_or_else(|| "-".to_owned(), micros);
            let ratio = row
                .cpu_ratio()
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}x"));
            let _ = writeln!(
                out,
                "{:<34} {:>8} {:>6} {:>10.0} {:>9} {:>9} {:>11} {:>11} {:>8}",
                row.id,
                ours.ops,
                ours.errors,
                ours.rate,
                millis(ours.p50),
                millis(ours.p99),
                ours.cpu_per_op.map_or_else(|| "-".to_owned(), micros),
                base,
                ratio
            );
            if let Some((name, m)) = &row.baseline {
                let _ = writeln!(
                    out,
                    "{:<34} {:>8} {:>6} {:>10.0} {:>9} {:>9} {:>11}",
                    format!("  baseline: {name}"),
                    m.ops,
                    m.errors,
                    m.rate,
                    millis(m.p50),
                    millis(m.p99),
                    m.cpu_per_op.map_or_else(|| "-".to_owned(), micros),
                );
            }
            if !row.note.is_empty() {
                let _ = writeln!(out, "{:<34} ({})", "", row.note);
            }
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<62} {:>10} {:>9} {:>5}",
            "target", "measured", "limit", ""
        );
        for target in &self.targets {
            let measured = target
                .measured
                .map_or_else(|| "-".to_owned(), |m| format!("{m:.3}"));
            let limit = format!(
                "{}{}",
                if target.at_most { "<= " } else { ">= " },
                target.limit
            );
            let _ = writeln!(
                out,
                "{:<62} {:>10} {:>9} {:>5}",
                target.goal,
                measured,
                limit,
                target.mark()
            );
            if let Some((holds, text)) = &target.also {
                let holds = if *holds { "yes" } else { "NO" };
                let _ = writeln!(out, "{:<62} {text}: {holds}", "");
            }
            if !target.note.is_empty() {
                let _ = writeln!(out, "{:<4}{}", "", target.note);
            }
        }
        out
    }

    /// The JSON report.
    pub fn json(&self) -> Value {
        json!({
            "mode": self.mode,
            "context": self.context.iter().map(|(k, v)| (k.clone(), Value::from(v.clone()))).collect::<serde_json::Map<_, _>>(),
            "rows": self.rows.iter().map(Row::json).collect::<Vec<_>>(),
            "targets": self.targets.iter().map(Target::json).collect::<Vec<_>>(),
        })
    }
}

/// `a / b`, if `b` is not zero.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn micros(d: Duration) -> String {
    format!("{:.1}us", d.as_secs_f64() * 1e6)
}

fn millis(d: Duration) -> String {
    format!("{:.2}ms", d.as_secs_f64() * 1e3)
}
