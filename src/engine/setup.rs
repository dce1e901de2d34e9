//! The community the engine serves: staff, residents, the duty rota and the escalation policy.
//!
//! These are validated domain values; `config` builds them from the installer's files and
//! guarantees every cross-reference (staff ids, device ids) resolves.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// Language of the human-readable `text` of pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locale {
    ZhCn,
    En,
}

impl Locale {
    /// The language tag `locale` is written with.
    pub fn tag(self) -> &'static str {
        match self {
            Locale::ZhCn => "zh-CN",
            Locale::En => "en",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staff {
    pub id: String,
    pub name: String,
    pub phone: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resident {
    pub id: String,
    pub name: String,
    pub address: String,
    pub phone: String,
    pub notes: String,
    pub device_id: u32,
    /// Tier 2: this resident's helpers and guardians (staff ids).
    pub team: Vec<String>,
}

/// One line of the duty rota: who is on duty on these days between these local times.
/// `from > to` runs past midnight (the shift belongs to the day it starts);
/// `from == to` is a full 24 hours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shift {
    pub days: Vec<Weekday>,
    pub from: Time,
    pub to: Time,
    pub staff: Vec<String>,
}

impl Shift {
    /// Is this shift running at local `weekday` and `time`?
    pub fn covers(&self, weekday: Weekday, time: Time) -> bool {
        let today = self.days.contains(&weekday);
        let yesterday = self.days.contains(&weekday.wrapping_sub(1));
        if self.from < self.to {
            today && self.from <= time && time < self.to
        } else {
            (today && time >= self.from) || (yesterday && time < self.to)
        }
    }
}

/// Tier 1: who is on duty by local wall-clock time.
#[derive(Debug, Clone)]
pub struct Rota {
    pub tz: TimeZone,
    pub shifts: Vec<Shift>,
}

impl Rota {
    /// Staff on duty at `wall`, in rota order, without repeats.
    pub fn on_duty(&self, wall: Timestamp) -> Vec<String> {
        let local = wall.to_zoned(self.tz.clone());
        let (weekday, time) = (local.weekday(), local.time());
        let mut out: Vec<String> = Vec::new();
        for shift in self.shifts.iter().filter(|s| s.covers(weekday, time)) {
            for id in &shift.staff {
                if !out.contains(id) {
                    out.push(id.clone());
                }
            }
        }
        out
    }

    /// The local calendar day of `wall` (for "once per band per day").
    pub fn local_day(&self, wall: Timestamp) -> jiff::civil::Date {
        wall.to_zoned(self.tz.clone()).date()
    }
}

/// What to do with the wearer's Cancel frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WearerCancel {
    /// Stop further tiers, ask the people paged to verify by phone; resume if nobody resolves.
    Verify,
    /// Resolve at once as `wearer_cancel_verified` by "wearer".
    Close,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escalation {
    /// Wait at tier 1, then tier 2, ... before paging the next tier. Tiers = len + 1.
    pub ack_timeouts: Vec<Duration>,
    pub renotify_every: Duration,
    pub repeat_every: Duration,
    pub claim_timeout: Duration,
    pub wearer_cancel: WearerCancel,
    pub cancel_verify_timeout: Duration,
    /// Added at the last tier.
    pub supervisors: Vec<String>,
}

impl Escalation {
    /// Number of tiers: one per ack timeout, plus the last (supervisors) tier.
    pub fn tiers(&self) -> u8 {
        u8::try_from(self.ack_timeouts.len() + 1).unwrap_or(u8::MAX)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Supervision {
    /// No frame from an enrolled band for this long raises `device_silent`.
    pub silent_after: Duration,
    /// Battery below this raises one `low_battery` notice per band per local day.
    pub low_battery_pct: u8,
}

/// Everything the engine needs to know about the deployment.
#[derive(Debug, Clone)]
pub struct Setup {
    pub gateway_id: String,
    pub locale: Locale,
    pub staff: BTreeMap<String, Staff>,
    /// By device id.
    pub residents: BTreeMap<u32, Resident>,
    pub rota: Rota,
    pub escalation: Escalation,
    pub supervision: Supervision,
    pub resolved_retention: Duration,
    pub device_state_interval: Duration,
    /// `[fallback]`: SMS and ring calls to people whose phone did not confirm a page.
    /// `None`: no SMS or call is ever asked for.
    pub fallback: Option<Fallback>,
}

/// One step of the fallback ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Channel {
    Sms,
    Call,
    /// A request to the district platform (`webhook_url`), which texts or calls the person.
    Webhook,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Call => "call",
            Channel::Webhook => "webhook",
        }
    }

    pub fn parse(s: &str) -> Option<Channel> {
        [Channel::Sms, Channel::Call, Channel::Webhook]
            .into_iter()
            .find(|c| c.as_str() == s)
    }
}

/// How a person can be reached (`[[staff]] channels`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channels {
    /// The duty app (MQTT pages). Without it the ladder starts as soon as they are paged.
    pub mqtt: bool,
    pub sms: bool,
    pub call: bool,
}

impl Default for Channels {
    fn default() -> Channels {
        Channels {
            mqtt: true,
            sms: true,
            call: true,
        }
    }
}

impl Channels {
    pub fn has(&self, c: Channel) -> bool {
        match c {
            Channel::Sms => self.sms,
            Channel::Call => self.call,
            // The platform texts or calls them: either will do.
            Channel::Webhook => self.sms || self.call,
        }
    }
}

/// `[fallback]`, checked: when and how a person whose phone did not confirm a page is reached
/// by SMS and ring calls (see `engine::fallback`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    /// A page neither `delivered` nor acted on by then starts the person's ladder.
    pub after: Duration,
    /// The ladder, in order (never empty).
    pub steps: Vec<Channel>,
    /// Gaps between steps: `step_every[i]` between step `i` and `i + 1` (0-based);
    /// exactly `steps.len() - 1` of them.
    pub step_every: Vec<Duration>,
    /// How long a call rings before it is hung up.
    pub ring_for: Duration,
    /// Never two calls to one number within this (carriers block callers that redial faster).
    pub call_gap: Duration,
    /// People whose channels are not the default (mqtt, sms, call), by staff id.
    pub channels: BTreeMap<String, Channels>,
}

/// Never two ring calls to one number within a minute, across all alerts (the contract).
pub const CALL_GAP: Duration = Duration::from_secs(60);

impl Fallback {
    pub fn channels_of(&self, staff_id: &str) -> Channels {
        self.channels.get(staff_id).copied().unwrap_or_default()
    }

    /// The gap after step `i` (0-based) before the next one.
    pub fn gap_after(&self, i: usize) -> Duration {
        self.step_every
            .get(i)
            .or(self.step_every.last())
            .copied()
            .unwrap_or(CALL_GAP)
    }
}

impl Setup {
    pub fn resident(&self, device_id: u32) -> Option<&Resident> {
        self.residents.get(&device_id)
    }

    pub fn staff_name<'a>(&'a self, id: &'a str) -> &'a str {
        self.staff.get(id).map(|s| s.name.as_str()).unwrap_or(id)
    }
}
