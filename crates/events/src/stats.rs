//! The figures `copilot-lsp stats` prints: suggestions shown, accepted (the whole of it, by
//! the client's command or typed through to the end), partially accepted (a word, a line, or
//! part typed), rejected, kept and deleted at the 30 s and 2 min checks, the acceptance rate
//! (accepted / shown) and the latency percentiles, for the whole log, by model and adapter,
//! and by day (UTC).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::read::Suggestion;
use crate::record::Retained;

/// The seconds after an accept at which the server checks that the text is still there.
pub const CHECKS_S: [u32; 2] = [30, 120];

/// One row of figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Figures {
    pub shown: usize,
    pub accepted: usize,
    pub partially_accepted: usize,
    pub rejected: usize,
    pub kept_30s: usize,
    pub kept_120s: usize,
    pub deleted_30s: usize,
    pub deleted_120s: usize,
    /// accepted / shown (0 when nothing was shown).
    pub acceptance_rate: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p95: f64,
}

impl Figures {
    fn of<'a>(items: impl IntoIterator<Item = &'a Suggestion>) -> Self {
        let mut f = Figures::default();
        let mut latencies = Vec::new();
        for s in items {
            f.shown += 1;
            latencies.push(s.shown.latency_ms);
            f.accepted += usize::from(s.is_accepted());
            f.partially_accepted += usize::from(s.is_partially_accepted());
            f.rejected += usize::from(s.rejected.is_some() && s.accepted_chars == 0);
            let is = |after, state| usize::from(s.retained(after) == Some(state));
            f.kept_30s += is(CHECKS_S[0], Retained::Kept);
            f.kept_120s += is(CHECKS_S[1], Retained::Kept);
            f.deleted_30s += is(CHECKS_S[0], Retained::Deleted);
            f.deleted_120s += is(CHECKS_S[1], Retained::Deleted);
        }
        if f.shown > 0 {
            f.acceptance_rate = f.accepted as f64 / f.shown as f64;
        }
        latencies.sort_by(f64::total_cmp);
        f.latency_ms_p50 = percentile(&latencies, 50.0);
        f.latency_ms_p95 = percentile(&latencies, 95.0);
        f
    }
}

/// Linear interpolation between closest ranks (numpy's default) of sorted values; 0 when
/// empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    match sorted.len() {
        0 => 0.0,
        1 => sorted[0],
        n => {
            let rank = (p / 100.0).clamp(0.0, 1.0) * (n - 1) as f64;
            let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
            sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelRow {
    pub model: String,
    pub adapter: Option<String>,
    #[serde(flatten)]
    pub figures: Figures,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DayRow {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    #[serde(flatten)]
    pub figures: Figures,
}

/// What `copilot-lsp stats --json` prints.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub workspace: String,
    pub files: Vec<String>,
    /// Lines read, and those skipped because they were not events.
    pub events: usize,
    pub corrupt_lines: usize,
    /// Only suggestions shown within this many days (all when absent).
    pub since_days: Option<f64>,
    #[serde(flatten)]
    pub total: Figures,
    pub by_model: Vec<ModelRow>,
    pub by_day: Vec<DayRow>,
}

/// Figures over `suggestions` shown at or after `since_ms` (all with `None`).
pub fn report(
    workspace: String,
    read: &crate::read::Read,
    since_days: Option<f64>,
    now_ms: u64,
) -> Report {
    let (all, _) = crate::read::fold(&read.events);
    let since_ms = since_days.map(|d| now_ms.saturating_sub((d.max(0.0) * 86_400_000.0) as u64));
    let kept: Vec<&Suggestion> = all
        .iter()
        .filter(|s| since_ms.is_none_or(|t| s.t >= t))
        .collect();
    let mut by_model: BTreeMap<(String, Option<String>), Vec<&Suggestion>> = BTreeMap::new();
    let mut by_day: BTreeMap<String, Vec<&Suggestion>> = BTreeMap::new();
    for s in &kept {
        by_model
            .entry((s.shown.model.clone(), s.shown.adapter.clone()))
            .or_default()
            .push(s);
        by_day.entry(day(s.t)).or_default().push(s);
    }
    Report {
        workspace,
        files: read.files.iter().map(|p| p.display().to_string()).collect(),
        events: read.events.len(),
        corrupt_lines: read.corrupt_lines,
        since_days,
        total: Figures::of(kept.iter().copied()),
        by_model: by_model
            .into_iter()
            .map(|((model, adapter), v)| ModelRow {
                model,
                adapter,
                figures: Figures::of(v),
            })
            .collect(),
        by_day: by_day
            .into_iter()
            .map(|(day, v)| DayRow {
                day,
                figures: Figures::of(v),
            })
            .collect(),
    }
}

/// The UTC date of a time in ms since the epoch (Howard Hinnant's `civil_from_days`).
pub fn day(ms: u64) -> String {
    let z = (ms / 86_400_000) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

impl Report {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut s = format!(
            "workspace {}\n{} events in {} file{}{}{}\n\n",
            self.workspace,
            self.events,
            self.files.len(),
            if self.files.len() == 1 { "" } else { "s" },
            if self.corrupt_lines > 0 {
                format!(", {} corrupt lines skipped", self.corrupt_lines)
            } else {
                String::new()
            },
            self.since_days
                .map(|d| format!(", shown within {d} days"))
                .unwrap_or_default(),
        );
        s += &format!(
            "{:<44} {:>6} {:>8} {:>6} {:>7} {:>8} {:>8} {:>7} {:>7}\n",
            "", "shown", "accepted", "rate", "partial", "kept 30s", "kept 2m", "p50 ms", "p95 ms"
        );
        let row = |name: &str, f: &Figures| {
            let name: String = if name.chars().count() > 44 {
                name.chars().take(43).collect::<String>() + "…"
            } else {
                name.to_string()
            };
            format!(
                "{name:<44} {:>6} {:>8} {:>5.1}% {:>7} {:>8} {:>8} {:>7.1} {:>7.1}\n",
                f.shown,
                f.accepted,
                f.acceptance_rate * 100.0,
                f.partially_accepted,
                f.kept_30s,
                f.kept_120s,
                f.latency_ms_p50,
                f.latency_ms_p95
            )
        };
        s += &row("all", &self.total);
        if self.by_model.len() > 1 || self.by_model.iter().any(|m| m.adapter.is_some()) {
            s += "\nby model and adapter\n";
            for m in &self.by_model {
                let name = match &m.adapter {
                    Some(a) => format!("{} + {a}", m.model),
                    None => m.model.clone(),
                };
                s += &row(&name, &m.figures);
            }
        }
        if !self.by_day.is_empty() {
            s += "\nby day (UTC)\n";
            for d in &self.by_day {
                s += &row(&d.day, &d.figures);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::Read;
    use crate::record::*;

    fn ev(id: &str, t: u64, what: What) -> Event {
        Event {
            v: FORMAT,
            t,
            id: id.into(),
            what,
        }
    }

    fn shown(id: &str, t: u64, latency_ms: f64, adapter: Option<&str>) -> Event {
        ev(
            id,
            t,
            What::Shown(Shown {
                path: "a.py".into(),
                line: 1,
                column: 0,
                model: "pico".into(),
                adapter: adapter.map(String::from),
                latency_ms,
                trigger: Trigger::Automatic,
                suggestion: "abcd".into(),
            }),
        )
    }

    fn accepted(id: &str, how: How, chars: usize) -> Event {
        ev(
            id,
            0,
            What::Accepted(Accepted {
                how,
                accepted_chars: chars,
                complete: chars == 4,
                context: None,
            }),
        )
    }

    fn retained(id: &str, after_s: u32, state: Retained) -> Event {
        ev(
            id,
            0,
            What::Retention(Retention {
                after_s,
                similarity: 1.0,
                state,
            }),
        )
    }

    #[test]
    fn dates_are_utc_days() {
        assert_eq!(day(0), "1970-01-01");
        assert_eq!(day(951_782_400_000), "2000-02-29");
        assert_eq!(day(1_709_251_199_999), "2024-02-29");
        assert_eq!(day(1_709_251_200_000), "2024-03-01");
    }

    #[test]
    fn percentiles_interpolate() {
        assert_eq!(percentile(&[], 50.0), 0.0);
        assert_eq!(percentile(&[3.0], 95.0), 3.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), 2.5);
        assert!((percentile(&[0.0, 10.0], 95.0) - 9.5).abs() < 1e-12);
    }

    #[test]
    fn figures_by_model_and_day_and_since() {
        let d1 = 1_700_000_000_000; // 2023-11-14
        let d2 = d1 + 86_400_000;
        let events = vec![
            shown("a", d1, 10.0, None),
            accepted("a", How::Command, 4),
            retained("a", 30, Retained::Kept),
            retained("a", 120, Retained::Deleted),
            shown("b", d1, 20.0, Some("ad")),
            accepted("b", How::Partial, 2),
            retained("b", 30, Retained::Kept),
            shown("c", d2, 30.0, None),
            ev(
                "c",
                d2,
                What::Rejected(Rejected {
                    reason: RejectReason::Superseded,
                }),
            ),
            shown("d", d2, 40.0, None),
            accepted("d", How::Typed, 4),
        ];
        let read = Read {
            events,
            corrupt_lines: 2,
            files: vec![],
        };
        let r = report("/w".into(), &read, None, d2);
        let t = &r.total;
        assert_eq!(
            (t.shown, t.accepted, t.partially_accepted, t.rejected),
            (4, 2, 1, 1)
        );
        assert_eq!((t.kept_30s, t.kept_120s, t.deleted_120s), (2, 0, 1));
        assert_eq!(t.acceptance_rate, 0.5);
        assert_eq!(t.latency_ms_p50, 25.0);
        assert_eq!(r.corrupt_lines, 2);
        assert_eq!(r.by_model.len(), 2);
        assert_eq!(r.by_model[0].adapter, None);
        assert_eq!(r.by_model[0].figures.shown, 3);
        assert_eq!(r.by_model[1].adapter.as_deref(), Some("ad"));
        assert_eq!(
            r.by_day.iter().map(|d| d.day.as_str()).collect::<Vec<_>>(),
            ["2023-11-14", "2023-11-15"]
        );
        let json = serde_json::to_value(&r).unwrap();
        for k in [
            "shown",
            "accepted",
            "partially_accepted",
            "kept_30s",
            "kept_120s",
            "acceptance_rate",
            "latency_ms_p50",
            "latency_ms_p95",
        ] {
            assert!(json.get(k).is_some(), "{k} missing from {json}");
            assert!(json["by_day"][0].get(k).is_some(), "{k} missing by day");
        }
        // Only the last day.
        let r = report("/w".into(), &read, Some(0.5), d2 + 1);
        assert_eq!(r.total.shown, 2);
        assert_eq!(r.total.accepted, 1);
        let table = r.table();
        assert!(table.contains("2023-11-15"), "{table}");
        assert!(table.contains("corrupt"), "{table}");
    }
}
