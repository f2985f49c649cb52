//! The table the run ends with: one row per figure, with its goal and
//! whether it was met, plus the absolute measurements it came from.

use std::fmt::Write as _;

/// Whether a figure reached its goal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Goal met.
    Met,
    /// Goal missed.
    Missed,
    /// No goal: shown for comparison.
    Info,
}

impl Verdict {
    /// Met when `ok`, missed otherwise.
    pub(crate) fn from_goal(ok: bool) -> Self {
        if ok { Self::Met } else { Self::Missed }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Met => "met",
            Self::Missed => "MISSED",
            Self::Info => "",
        }
    }
}

/// One figure.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    /// Which scenario.
    pub(crate) scenario: &'static str,
    /// What is measured.
    pub(crate) figure: String,
    /// The value, formatted.
    pub(crate) value: String,
    /// The goal, if there is one.
    pub(crate) goal: &'static str,
    /// Whether it was reached.
    pub(crate) verdict: Verdict,
    /// The absolute measurements behind it.
    pub(crate) detail: String,
}

/// Everything measured so far.
#[derive(Debug, Default)]
pub(crate) struct Report {
    rows: Vec<Row>,
}

impl Report {
    /// Adds a figure and prints it at once, so a long run shows progress.
    pub(crate) fn add(&mut self, row: Row) {
        println!("  {:<9} {:<52} {:>12}  {}", row.scenario, row.figure, row.value, row.detail);
        self.rows.push(row);
    }

    /// A Markdown table of every figure.
    pub(crate) fn table(&self) -> String {
        let mut out = String::new();
        out.push_str("| scenario | figure | value | goal | | measured |\n");
        out.push_str("| --- | --- | ---: | --- | --- | --- |\n");
        for row in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                row.scenario,
                row.figure,
                row.value,
                row.goal,
                row.verdict.as_str(),
                row.detail
            );
        }
        out
    }
}

/// `a / b` as "1.23x".
pub(crate) fn ratio(a: f64, b: f64) -> String {
    format!("{:.2}x", a / b)
}

/// Seconds with millisecond precision.
pub(crate) fn secs(d: std::time::Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

/// Bytes in MiB.
pub(crate) fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
