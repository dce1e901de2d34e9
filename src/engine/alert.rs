//! An alert and the values that describe it: kinds, states, resolutions, phone actions, and
//! what the engine asks the world to do (`Output`).

use std::time::Instant;

use jiff::{SignedDuration, Timestamp};

use super::setup::Channel;
use super::time::{wall_plus, Now};

/// What the alert is about. Declaration order is seriousness, least first, so `max` picks
/// the most serious kind when a band presses again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Made by the gateway about itself: its durable state was lost or cannot be kept.
    GatewayFault,
    Test,
    LowBattery,
    DeviceSilent,
    NoMotion,
    Fall,
    Sos,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Sos => "sos",
            Kind::Fall => "fall",
            Kind::NoMotion => "no_motion",
            Kind::DeviceSilent => "device_silent",
            Kind::LowBattery => "low_battery",
            Kind::Test => "test",
            Kind::GatewayFault => "gateway_fault",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        [
            Kind::Sos,
            Kind::Fall,
            Kind::NoMotion,
            Kind::DeviceSilent,
            Kind::LowBattery,
            Kind::Test,
            Kind::GatewayFault,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    /// Raised by a person's body or button: never grouped, delayed, silenced or rate-limited,
    /// and escalated through every tier.
    pub fn is_emergency(self) -> bool {
        matches!(self, Kind::Sos | Kind::Fall | Kind::NoMotion)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resolution {
    RealEmergency,
    FalseAlarm,
    WearerCancelVerified,
    Test,
    Duplicate,
    DeviceFault,
    Other,
}

impl Resolution {
    pub const ALL: [Resolution; 7] = [
        Resolution::RealEmergency,
        Resolution::FalseAlarm,
        Resolution::WearerCancelVerified,
        Resolution::Test,
        Resolution::Duplicate,
        Resolution::DeviceFault,
        Resolution::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::RealEmergency => "real_emergency",
            Resolution::FalseAlarm => "false_alarm",
            Resolution::WearerCancelVerified => "wearer_cancel_verified",
            Resolution::Test => "test",
            Resolution::Duplicate => "duplicate",
            Resolution::DeviceFault => "device_fault",
            Resolution::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<Resolution> {
        Resolution::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Where the alert is, with what belongs to that state: its deadline, the claim, the
/// verification of a wearer's cancel, the resolution. So an unresolved alert without a
/// deadline, a claim on an open alert or a resolution on an unresolved one cannot be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Paging at `tier`; nobody has claimed it.
    Open { remind_at: Instant, next: Next },
    /// Someone said "I'm going"; the claim lapses at `lapse_at`.
    Acknowledged { lapse_at: Instant, claim: Claim },
    /// Someone is with the resident (since `since`); the claimer is reminded to resolve at
    /// `remind_at`.
    OnScene {
        remind_at: Instant,
        claim: Claim,
        since: Timestamp,
    },
    /// Final; the retained copy is cleared at `clear_at`. `claim` and `on_scene_at`: how far
    /// a claim had got when it was resolved (a person who resolves unclaimed claims it too; the
    /// wearer or the gateway does not).
    Resolved {
        clear_at: Instant,
        closure: Closure,
        claim: Option<Claim>,
        on_scene_at: Option<Timestamp>,
    },
}

/// What an open alert does besides reminding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Reminders only: the last tier (or an alert not paged yet, or a quiet one).
    Remind,
    /// The next tier is paged at this time unless somebody claims it.
    Escalate(Instant),
    /// A wearer's cancel is being verified by phone: no further tier until this time, when
    /// escalation resumes unless somebody resolved it.
    Verify(Instant),
}

/// Who claimed the alert ("I'm going") and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub by: String,
    pub at: Timestamp,
}

/// Who closed the alert, when, and as what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closure {
    pub by: String,
    pub at: Timestamp,
    pub resolution: Resolution,
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Open { .. } => "open",
            State::Acknowledged { .. } => "acknowledged",
            State::OnScene { .. } => "on_scene",
            State::Resolved { .. } => "resolved",
        }
    }

    /// The claim, if the alert is claimed (or was, when it was resolved).
    pub fn claim(&self) -> Option<&Claim> {
        match self {
            State::Open { .. } => None,
            State::Acknowledged { claim, .. } | State::OnScene { claim, .. } => Some(claim),
            State::Resolved { claim, .. } => claim.as_ref(),
        }
    }

    /// When somebody reached the resident (kept when the alert is resolved).
    pub fn on_scene_at(&self) -> Option<Timestamp> {
        match self {
            State::OnScene { since, .. } => Some(*since),
            State::Resolved { on_scene_at, .. } => *on_scene_at,
            _ => None,
        }
    }

    pub fn closure(&self) -> Option<&Closure> {
        match self {
            State::Resolved { closure, .. } => Some(closure),
            _ => None,
        }
    }

    /// When the next tier is paged, if one is planned.
    pub fn escalate_at(&self) -> Option<Instant> {
        match self {
            State::Open {
                next: Next::Escalate(t),
                ..
            } => Some(*t),
            _ => None,
        }
    }

    /// While a wearer's cancel is verified: when escalation resumes if nobody resolved.
    pub fn verify_until(&self) -> Option<Instant> {
        match self {
            State::Open {
                next: Next::Verify(t),
                ..
            } => Some(*t),
            _ => None,
        }
    }
}

/// One alert, as the engine keeps it and the document shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub id: String,
    pub kind: Kind,
    pub state: State,
    /// The wearer pressed Cancel (until the band presses again); while the alert is open
    /// the cancel is verified (`Next::Verify`).
    pub cancel_requested: bool,
    /// Highest tier paged so far (1-based).
    pub tier: u8,
    /// `None` for test alerts.
    pub device_id: Option<u32>,
    pub raised_at: Timestamp,
    pub updated_at: Timestamp,
    /// Everyone paged so far, in paging order.
    pub notified: Vec<String>,
    /// The people paged at the current tier (the ones reminders go to).
    pub paged: Vec<String>,
    pub delivered_to: Vec<String>,
    pub declined: Vec<String>,
    pub battery_pct: Option<u8>,
    pub rssi: Option<i16>,
    /// Seqs of the band frames merged into this alert (a Cancel names one of them): the
    /// first and the latest `SEQS_KEPT - 1`, so a stuck button cannot grow the record.
    pub seqs: Vec<u32>,
    /// A `gateway_fault`'s description of what went wrong (`None` for other kinds).
    pub detail: Option<String>,
    /// How the band's presses of this open alert were coalesced.
    pub presses: Presses,
    /// Whether this alert is paged on its own or stands in a group (silent bands).
    pub grouping: Grouping,
    /// The fallback ladder of each person paged (SMS, ring calls; see `engine::fallback`).
    pub ladders: Vec<Ladder>,
    /// What the ladders did, oldest first (the document's `contacts`).
    pub contacts: Vec<Contact>,
}

/// One person's fallback ladder on one alert: one per person per alert, re-pages do not
/// restart it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ladder {
    pub staff_id: String,
    /// The next step to take, 0-based into `[fallback] steps` (`steps.len()`: all taken).
    pub next: usize,
    /// When the next step is due; `None`: stopped (the person delivered or acted, the alert
    /// was claimed or resolved, or every step was taken).
    pub due: Option<Instant>,
    /// Stopped by a claim, not by this person: taken up again if the alert is open again.
    pub held: bool,
}

/// The outcome of one SMS or call (the contract's `contacts[].outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Recorded before the SMS or call is attempted (so that a restart never repeats it);
    /// the modem's answer replaces it.
    Requested,
    Sent,
    Delivered,
    Ringing,
    Answered,
    Refused,
    Unanswered,
    Failed,
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Outcome::Requested,
        Outcome::Sent,
        Outcome::Delivered,
        Outcome::Ringing,
        Outcome::Answered,
        Outcome::Refused,
        Outcome::Unanswered,
        Outcome::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Requested => "requested",
            Outcome::Sent => "sent",
            Outcome::Delivered => "delivered",
            Outcome::Ringing => "ringing",
            Outcome::Answered => "answered",
            Outcome::Refused => "refused",
            Outcome::Unanswered => "unanswered",
            Outcome::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// Nothing more will be reported about the attempt.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Outcome::Delivered
                | Outcome::Answered
                | Outcome::Refused
                | Outcome::Unanswered
                | Outcome::Failed
        )
    }
}

/// One SMS or call of a ladder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub staff_id: String,
    pub channel: Channel,
    /// 1-based position in `[fallback] steps`.
    pub step: u8,
    pub at: Timestamp,
    pub outcome: Outcome,
    pub detail: Option<String>,
}

/// Seqs an alert remembers for a wearer's Cancel: the first press and the latest ones.
pub const SEQS_KEPT: usize = 32;

/// A band's presses merged into one open alert. Presses page again at most once per
/// `renotify_every` after the alert's last page; a band pressing far faster than a person
/// can is flagged as a probable device fault (it keeps paging: the flag hides nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presses {
    /// Band frames merged into the alert, the one that raised it included (0 for alerts
    /// that no band frame raised).
    pub count: u32,
    /// When the latest press was heard.
    pub last_at: Option<Timestamp>,
    /// When a page of this alert last went out (not kept across a restart).
    pub paged_at: Option<Instant>,
    /// A press that was coalesced, not paged yet: paged at this time.
    pub due: Option<Instant>,
    /// The current burst of presses: when it started and how many it holds.
    pub burst: Option<(Instant, u32)>,
    /// The band pressed far faster than a person can.
    pub fault_suspected: bool,
}

/// Many silent bands make one gateway notice, not one page each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Grouping {
    /// Paged on its own: every alert but a silence among many.
    #[default]
    Alone,
    /// A band's silence waiting to see whether many others fall silent with it (not paged).
    Held,
    /// A band's silence that the gateway notice with this id stands for (never paged).
    In(String),
    /// The gateway notice for many silent bands.
    Notice(SilentBands),
}

/// What the gateway notice of many silent bands says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SilentBands {
    /// Bands that fell silent under this notice.
    pub count: u32,
    /// Of those, the ones not heard again yet.
    pub still_silent: u32,
    /// A few of them, by device id, to name in the page.
    pub named: Vec<u32>,
}

impl Alert {
    /// A new alert of `kind`, open but not paged yet (`Engine::open_alert` pages it): the one
    /// way an `Alert` is built, by the engine's raises and by tests and benches (which add
    /// what they need with the methods below or struct update syntax).
    pub fn new(id: impl Into<String>, kind: Kind, now: Now) -> Alert {
        Alert {
            id: id.into(),
            kind,
            state: State::Open {
                remind_at: now.mono,
                next: Next::Remind,
            },
            cancel_requested: false,
            tier: 0,
            device_id: None,
            raised_at: now.wall,
            // The first page moves it to `raised_at`.
            updated_at: wall_plus(now.wall, SignedDuration::from_millis(-1)),
            notified: Vec::new(),
            paged: Vec::new(),
            delivered_to: Vec::new(),
            declined: Vec::new(),
            battery_pct: None,
            rssi: None,
            seqs: Vec::new(),
            detail: None,
            presses: Presses::default(),
            grouping: Grouping::Alone,
            ladders: Vec::new(),
            contacts: Vec::new(),
        }
    }

    /// About band `device_id`, with what was last heard of it.
    pub fn of_band(self, device_id: u32, battery_pct: Option<u8>, rssi: Option<i16>) -> Alert {
        Alert {
            device_id: Some(device_id),
            battery_pct,
            rssi,
            ..self
        }
    }

    /// Raised by the band's press `seq` (kept for a wearer's cancel), its first press.
    pub fn first_press(mut self, seq: u32, now: Now) -> Alert {
        self.seqs.push(seq);
        self.presses.count = 1;
        self.presses.last_at = Some(now.wall);
        self.presses.burst = Some((now.mono, 1));
        self
    }

    /// Paged at `tier` to `people` (as a document shows it; the engine pages by itself).
    pub fn paged_to(mut self, tier: u8, people: &[&str]) -> Alert {
        self.tier = tier;
        self.notified = people.iter().map(|p| p.to_string()).collect();
        self.paged = self.notified.clone();
        self
    }

    pub fn is_resolved(&self) -> bool {
        matches!(self.state, State::Resolved { .. })
    }

    /// Held or grouped: changes are kept and stored but neither published nor paged.
    pub fn is_quiet(&self) -> bool {
        matches!(self.grouping, Grouping::Held | Grouping::In(_))
    }

    /// The next moment this alert needs the engine.
    pub fn deadline(&self) -> Instant {
        let own = self.own_deadline();
        self.ladders
            .iter()
            .filter_map(|l| l.due)
            .fold(own, Instant::min)
    }

    /// The earliest step due of a ladder, if any.
    pub fn ladder_due(&self) -> Option<Instant> {
        self.ladders.iter().filter_map(|l| l.due).min()
    }

    /// The alert's own deadline, without its ladders'.
    pub fn own_deadline(&self) -> Instant {
        match &self.state {
            State::Open { remind_at, next } => {
                let planned = match next {
                    Next::Remind => *remind_at,
                    Next::Escalate(t) | Next::Verify(t) => (*remind_at).min(*t),
                };
                self.press_due_or(planned)
            }
            State::Acknowledged { lapse_at, .. } => self.press_due_or(*lapse_at),
            State::OnScene { remind_at, .. } => self.press_due_or(*remind_at),
            State::Resolved { clear_at, .. } => *clear_at,
        }
    }
}

impl Alert {
    fn press_due_or(&self, t: Instant) -> Instant {
        self.presses.due.map_or(t, |d| d.min(t))
    }

    /// Who holds the claim (the document's `acked_by`).
    pub fn acked_by(&self) -> Option<&str> {
        self.state.claim().map(|c| c.by.as_str())
    }

    pub fn acked_at(&self) -> Option<Timestamp> {
        self.state.claim().map(|c| c.at)
    }

    pub fn on_scene_at(&self) -> Option<Timestamp> {
        self.state.on_scene_at()
    }

    pub fn resolved_by(&self) -> Option<&str> {
        self.state.closure().map(|c| c.by.as_str())
    }

    pub fn resolved_at(&self) -> Option<Timestamp> {
        self.state.closure().map(|c| c.at)
    }

    pub fn resolution(&self) -> Option<Resolution> {
        self.state.closure().map(|c| c.resolution)
    }
}

/// Why a person is paged (`reason` of a notification).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotifyReason {
    New,
    Escalated,
    Reminder,
    Acknowledged,
    ClaimLapsed,
    CancelRequested,
    Resolved,
}

impl NotifyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyReason::New => "new",
            NotifyReason::Escalated => "escalated",
            NotifyReason::Reminder => "reminder",
            NotifyReason::Acknowledged => "acknowledged",
            NotifyReason::ClaimLapsed => "claim_lapsed",
            NotifyReason::CancelRequested => "cancel_requested",
            NotifyReason::Resolved => "resolved",
        }
    }
}

/// What a duty phone can say about an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Delivered,
    Ack,
    Decline,
    OnScene,
    Resolve(Resolution),
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Delivered => "delivered",
            Action::Ack => "ack",
            Action::Decline => "decline",
            Action::OnScene => "on_scene",
            Action::Resolve(_) => "resolve",
        }
    }
}

/// Why a phone action was ignored (logged at warn and counted by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Refusal {
    #[error("unknown staff")]
    UnknownStaff,
    #[error("unknown alert")]
    UnknownAlert,
    #[error("alert already resolved")]
    AlreadyResolved,
    /// The contract's "who may act": this person was not paged about the alert (or, for
    /// `on_scene` and `resolve`, does not hold its claim) and is not a supervisor.
    #[error("not permitted: not paged about this alert, not its claimer, not a supervisor")]
    NotPermitted,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::UnknownStaff => "unknown_staff",
            Refusal::UnknownAlert => "unknown_alert",
            Refusal::AlreadyResolved => "already_resolved",
            Refusal::NotPermitted => "not_permitted",
        }
    }
}

/// Latest telemetry of a band, published as its device state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceState {
    pub device_id: u32,
    pub last_seen: Timestamp,
    pub rssi: Option<i16>,
    pub battery_pct: u8,
    pub worn: bool,
    pub heart_rate: Option<u8>,
    pub spo2: Option<u8>,
    pub steps: Option<u32>,
}

/// An effect the engine asks for. The daemon makes it durable, then performs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The alert document changed: publish it (retained).
    AlertChanged(Box<Alert>),
    /// Page one person about an alert.
    Notify {
        staff_id: String,
        reason: NotifyReason,
        alert: Box<Alert>,
    },
    /// The resolved alert's retention is over: clear the retained copy.
    AlertCleared { alert_id: String },
    /// A band's telemetry, at most once per `device_state_interval` or on a notable change.
    DeviceState(DeviceState),
    /// A band fell silent (`silent_after`): its device state says so, with what was last known
    /// (the next frame heard publishes its telemetry again, which says it no longer is).
    DeviceSilent(SilentDevice),
    /// Send an SMS or place a call (a ladder's step). Already recorded in the alert as
    /// `requested`: the daemon performs it after the commit that holds that record.
    Contact(ContactRequest),
}

/// A silent band's device state: what was last known of it, if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SilentDevice {
    pub device_id: u32,
    pub last_seen: Option<Timestamp>,
    pub battery_pct: Option<u8>,
    pub worn: Option<bool>,
}

/// A ladder's step for the modem: who, how, and the alert it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactRequest {
    pub alert: Box<Alert>,
    pub staff_id: String,
    pub phone: String,
    pub channel: Channel,
    /// 1-based.
    pub step: u8,
    /// A step recorded as requested before a restart, whose fate is unknown: the adapter
    /// looks for it (an SMS the modem still holds) before making it again.
    pub resume: bool,
}

/// What the modem reports about a step (an input of the engine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactReport {
    pub alert_id: String,
    pub staff_id: String,
    pub step: u8,
    pub outcome: Outcome,
    pub detail: Option<String>,
}
