//! Turns the JSON lines written by `throughput` and `failover` over several
//! runs into the final comparison tables: per metric, the median of each
//! system and the ratio berth/etcd, one table per setting (a line's
//! optional `"setting"` field, e.g. whose Raft timings both systems ran
//! with), in the order the settings first appear. Pure apart from the
//! caller reading the file, so the script needs no JSON tool.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// What a row of the table measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    WritesPerSec,
    P50Ms,
    P99Ms,
    /// CPU time of the three servers together, per acknowledged write.
    ServerCpuUs,
    /// CPU time of the load generator itself, per acknowledged write.
    ClientCpuUs,
    FailoverMs,
}

/// A row: throughput metrics are per client count, failover stands alone
/// and sorts last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Metric {
    clients: u64,
    kind: Kind,
}

impl Metric {
    fn label(self) -> String {
        match self.kind {
            Kind::WritesPerSec => format!("writes/s @{}", self.clients),
            Kind::P50Ms => format!("p50 ms @{}", self.clients),
            Kind::P99Ms => format!("p99 ms @{}", self.clients),
            Kind::ServerCpuUs => format!("servers' CPU us/write @{}", self.clients),
            Kind::ClientCpuUs => format!("client's CPU us/write @{}", self.clients),
            Kind::FailoverMs => "failover ms".to_string(),
        }
    }

    fn decimals(self) -> usize {
        match self.kind {
            Kind::WritesPerSec | Kind::FailoverMs | Kind::ServerCpuUs | Kind::ClientCpuUs => 0,
            Kind::P50Ms | Kind::P99Ms => 3,
        }
    }
}

/// The systems' columns, in this order; the ratio is the first over the
/// second. The third is the no-op gRPC baseline, when it was measured.
const SYSTEMS: [&str; 3] = ["berth", "etcd", "berth-noop"];

/// All samples of a set of runs, by metric and system.
#[derive(Default)]
pub struct Results {
    samples: BTreeMap<Metric, BTreeMap<String, Vec<f64>>>,
    errors: BTreeMap<String, u64>,
}

/// The results of every setting, in the order the settings first appear.
#[derive(Default)]
pub struct Report {
    settings: Vec<(String, Results)>,
}

impl Report {
    /// Reads JSON lines as printed by `throughput` and `failover`; blank
    /// lines are skipped, anything else unrecognised is refused with its
    /// line number.
    pub fn parse(text: &str) -> Result<Self> {
        let mut report = Self::default();
        for (number, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())) {
            if line.is_empty() {
                continue;
            }
            let value: Value =
                serde_json::from_str(line).with_context(|| format!("line {number} is not JSON: {line}"))?;
            let setting = value.get("setting").and_then(Value::as_str).unwrap_or_default();
            let results = match report.settings.iter().position(|(s, _)| s == setting) {
                Some(i) => &mut report.settings[i].1,
                None => {
                    report.settings.push((setting.to_string(), Results::default()));
                    &mut report.settings.last_mut().context("just pushed")?.1
                }
            };
            results.add(&value).with_context(|| format!("line {number}: {line}"))?;
        }
        Ok(report)
    }

    /// One table per setting, each under its setting's name.
    pub fn tables(&self) -> String {
        let mut out = String::new();
        for (setting, results) in &self.settings {
            if !setting.is_empty() {
                let _ = writeln!(out, "\n{setting}");
            }
            out.push_str(&results.table());
        }
        out
    }
}

impl Results {
    fn add(&mut self, line: &Value) -> Result<()> {
        let Some(system) = line.get("system").and_then(Value::as_str) else {
            bail!("no \"system\" field");
        };
        if let Some(failover) = line.get("failover_ms").and_then(Value::as_f64) {
            self.push(Metric { clients: u64::MAX, kind: Kind::FailoverMs }, system, failover);
            return Ok(());
        }
        let Some(clients) = line.get("clients").and_then(Value::as_u64) else {
            bail!("neither \"failover_ms\" nor \"clients\": not a berth-bench result");
        };
        let field = |name: &str| line.get(name).and_then(Value::as_f64);
        let kinds = [
            (Kind::WritesPerSec, "writes_per_sec"),
            (Kind::P50Ms, "p50_ms"),
            (Kind::P99Ms, "p99_ms"),
            (Kind::ServerCpuUs, "server_cpu_us_per_write"),
            (Kind::ClientCpuUs, "client_cpu_us_per_write"),
        ];
        for (kind, name) in kinds {
            // A run with no acknowledged write has null percentiles, and a
            // line from `throughput` alone has no CPU figures.
            if let Some(value) = field(name) {
                self.push(Metric { clients, kind }, system, value);
            }
        }
        let errors = line.get("errors").and_then(Value::as_u64).unwrap_or(0);
        *self.errors.entry(system.to_string()).or_default() += errors;
        Ok(())
    }

    fn push(&mut self, metric: Metric, system: &str, value: f64) {
        self.samples.entry(metric).or_default().entry(system.to_string()).or_default().push(value);
    }

    /// The comparison table, one row per metric.
    pub fn table(&self) -> String {
        let header =
            ["metric", "berth (median)", "etcd (median)", "ratio berth/etcd", "no-op gRPC (median)", "runs b/e/n"];
        let mut rows = vec![header.map(String::from).to_vec()];
        for (metric, by_system) in &self.samples {
            let medians = SYSTEMS.map(|s| by_system.get(s).and_then(|v| median(v)));
            let runs = SYSTEMS.map(|s| by_system.get(s).map_or(0, Vec::len));
            let shown = medians.map(|m| m.map_or_else(|| "-".to_string(), |v| format!("{v:.*}", metric.decimals())));
            let ratio = match medians {
                [Some(b), Some(e), _] if e != 0.0 => format!("{:.2}", b / e),
                _ => "-".to_string(),
            };
            let [berth, etcd, noop] = shown;
            rows.push(vec![metric.label(), berth, etcd, ratio, noop, format!("{}/{}/{}", runs[0], runs[1], runs[2])]);
        }
        let widths: Vec<usize> =
            (0..header.len()).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
        let mut out = String::new();
        for (i, row) in rows.iter().enumerate() {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(c, (cell, w))| if c == 0 { format!("{cell:<w$}") } else { format!("{cell:>w$}") })
                .collect();
            let _ = writeln!(out, "{}", cells.join(" | "));
            if i == 0 {
                let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
                let _ = writeln!(out, "{}", rule.join("-|-"));
            }
        }
        let errors: Vec<String> = SYSTEMS
            .iter()
            .filter(|s| self.samples.values().any(|by_system| by_system.contains_key(**s)))
            .map(|s| format!("{s} {}", self.errors.get(*s).copied().unwrap_or(0)))
            .collect();
        let _ = writeln!(out, "failed writes during throughput runs: {}", errors.join(", "));
        out
    }
}

/// Median of the samples (mean of the middle two for an even count).
fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn table_has_medians_ratios_and_rows_in_order() {
        let lines = r#"
{"system":"etcd","clients":1,"writes_per_sec":1000.0,"p50_ms":0.7,"p99_ms":1.1,"errors":0}
{"system":"etcd","clients":1,"writes_per_sec":1200.0,"p50_ms":0.6,"p99_ms":1.0,"errors":0}
{"system":"etcd","clients":1,"writes_per_sec":1400.0,"p50_ms":0.8,"p99_ms":1.2,"errors":0}
{"system":"berth","clients":1,"writes_per_sec":600.0,"p50_ms":1.4,"p99_ms":2.2,"errors":2,"server_cpu_us_per_write":900.0,"client_cpu_us_per_write":120.0}
{"system":"etcd","clients":64,"writes_per_sec":4400.0,"p50_ms":14.0,"p99_ms":30.0,"errors":0}
{"system":"berth-noop","clients":1,"writes_per_sec":5000.0,"p50_ms":0.2,"p99_ms":0.3,"errors":0}
{"system":"etcd","failover_ms":1200.0}
{"system":"berth","failover_ms":600.0}
"#;
        let table = Report::parse(lines).map(|r| r.tables()).unwrap_or_default();
        let rows: Vec<Vec<&str>> = table.lines().map(|l| l.split('|').map(str::trim).collect()).collect();
        assert_eq!(rows[2], ["writes/s @1", "600", "1200", "0.50", "5000", "1/3/1"], "{table}");
        assert_eq!(rows[3], ["p50 ms @1", "1.400", "0.700", "2.00", "0.200", "1/3/1"], "{table}");
        assert_eq!(rows[5], ["servers' CPU us/write @1", "900", "-", "-", "-", "1/0/0"], "{table}");
        assert_eq!(rows[6], ["client's CPU us/write @1", "120", "-", "-", "-", "1/0/0"], "{table}");
        assert_eq!(rows[7], ["writes/s @64", "-", "4400", "-", "-", "0/1/0"], "{table}");
        assert_eq!(rows[10], ["failover ms", "600", "1200", "0.50", "-", "1/1/0"], "{table}");
        assert!(table.contains("berth 2, etcd 0, berth-noop 0"), "{table}");
    }

    #[test]
    fn a_line_that_is_no_result_is_refused_with_its_number() {
        let error = Report::parse("\n{\"system\":\"etcd\"}\n").err().map(|e| format!("{e:#}"));
        assert!(error.is_some_and(|e| e.contains("line 2")));
    }

    #[test]
    fn each_setting_gets_its_own_table_in_the_order_first_seen() {
        let lines = r#"
{"setting":"at berth's timing","system":"berth","failover_ms":400.0}
{"setting":"at etcd's timing","system":"berth","failover_ms":2500.0}
{"setting":"at berth's timing","system":"etcd","failover_ms":800.0}
{"setting":"at etcd's timing","system":"etcd","failover_ms":1400.0}
"#;
        let tables = Report::parse(lines).map(|r| r.tables()).unwrap_or_default();
        let berth_timing = tables.find("at berth's timing");
        let etcd_timing = tables.find("at etcd's timing");
        assert!(berth_timing.is_some() && berth_timing < etcd_timing, "{tables}");
        let failovers: Vec<Vec<&str>> = tables
            .lines()
            .filter(|l| l.starts_with("failover ms"))
            .map(|l| l.split('|').map(str::trim).collect())
            .collect();
        assert_eq!(failovers[0], ["failover ms", "400", "800", "0.50", "-", "1/1/0"], "{tables}");
        assert_eq!(failovers[1], ["failover ms", "2500", "1400", "1.79", "-", "1/1/0"], "{tables}");
    }
}
