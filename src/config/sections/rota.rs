//! `[[rota]]`: tier 1, who is on duty by local time (`from > to` runs past midnight).

use config::Value;
use jiff::civil::{Time, Weekday};
use serde::Deserialize;

use crate::config::diagnose::Check;
use crate::engine::Shift;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShift {
    days: Vec<String>,
    from: String,
    to: String,
    staff: Vec<String>,
}

impl Check {
    /// `refs` gets every staff id named here, to be looked up once `[[staff]]` is read.
    pub(in crate::config) fn shifts(
        &mut self,
        entries: Vec<Value>,
        refs: &mut Vec<(String, String)>,
    ) -> Vec<Shift> {
        let mut shifts = Vec::new();
        for (i, v) in entries.into_iter().enumerate() {
            let key = format!("rota[{i}]");
            let Some(raw) = self.take::<RawShift>(&key, v) else {
                continue;
            };
            let mut days = Vec::new();
            for (d, name) in raw.days.iter().enumerate() {
                match parse_day(name) {
                    Some(day) => days.push(day),
                    None => self.problem(
                        &format!("{key}.days[{d}]"),
                        format!("{name:?} is not a day"),
                        "use mon, tue, wed, thu, fri, sat or sun",
                    ),
                }
            }
            if raw.days.is_empty() {
                self.problem(
                    &format!("{key}.days"),
                    "no days are given, so this shift never runs",
                    "list its days, e.g. days = [\"mon\", \"tue\"]",
                );
            }
            if raw.staff.is_empty() {
                self.problem(
                    &format!("{key}.staff"),
                    "nobody is on this shift",
                    "list the staff ids on duty, e.g. staff = [\"zhang\"]",
                );
            }
            let from = self.time(&format!("{key}.from"), &raw.from);
            let to = self.time(&format!("{key}.to"), &raw.to);
            for (s, id) in raw.staff.iter().enumerate() {
                refs.push((format!("{key}.staff[{s}]"), id.clone()));
            }
            if let (Some(from), Some(to)) = (from, to) {
                shifts.push(Shift {
                    days,
                    from,
                    to,
                    staff: raw.staff,
                });
            }
        }
        shifts
    }

    fn time(&mut self, key: &str, raw: &str) -> Option<Time> {
        let t = parse_hh_mm(raw);
        if t.is_none() {
            self.problem(
                key,
                format!("{raw:?} is not a time of day"),
                "write local 24-hour time as \"HH:MM\", e.g. \"08:00\" or \"20:30\"",
            );
        }
        t
    }
}
fn parse_day(name: &str) -> Option<Weekday> {
    Some(match name.to_ascii_lowercase().as_str() {
        "mon" => Weekday::Monday,
        "tue" => Weekday::Tuesday,
        "wed" => Weekday::Wednesday,
        "thu" => Weekday::Thursday,
        "fri" => Weekday::Friday,
        "sat" => Weekday::Saturday,
        "sun" => Weekday::Sunday,
        _ => return None,
    })
}

/// Exactly `HH:MM`, 24-hour.
fn parse_hh_mm(s: &str) -> Option<Time> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 || !(h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit())) {
        return None;
    }
    let (h, m): (i8, i8) = (h.parse().ok()?, m.parse().ok()?);
    Time::new(h, m, 0, 0).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_strict() {
        assert_eq!(parse_hh_mm("08:00"), Time::new(8, 0, 0, 0).ok());
        assert_eq!(parse_hh_mm("23:59"), Time::new(23, 59, 0, 0).ok());
        for bad in ["8:00", "24:00", "12:60", "0800", "08:00:00", "ab:cd"] {
            assert_eq!(parse_hh_mm(bad), None, "{bad}");
        }
    }
}
