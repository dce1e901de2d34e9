//! A simulated community around the engine: simulated time, sealed frames, and a transcript of
//! everything the engine asks the world to do, for scenario and property tests.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use bandgate::engine::*;
use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use jiff::Timestamp;

pub const KEY17: [u8; 16] = [0x17; 16];
pub const KEY18: [u8; 16] = [0x18; 16];
pub const COMPANY: u16 = 0xFFFF;

fn staff(id: &str, name: &str) -> (String, Staff) {
    (
        id.to_string(),
        Staff {
            id: id.into(),
            name: name.into(),
            phone: "13800000000".into(),
        },
    )
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// zhang is on duty 08:00-20:00 every day (Asia/Shanghai), nobody at night; r017 (band 17)
/// has team li and wang, r018 (band 18) has team wang only; chen supervises.
pub fn setup() -> Setup {
    let all_days = vec![
        Weekday::Monday,
        Weekday::Tuesday,
        Weekday::Wednesday,
        Weekday::Thursday,
        Weekday::Friday,
        Weekday::Saturday,
        Weekday::Sunday,
    ];
    let resident = |id: &str, name: &str, device_id: u32, team: &[&str]| Resident {
        id: id.into(),
        name: name.into(),
        address: "广惠园社区 3号楼 2单元 401".into(),
        phone: "13800000000".into(),
        notes: String::new(),
        device_id,
        team: strings(team),
    };
    Setup {
        gateway_id: "gw-test".into(),
        locale: Locale::ZhCn,
        staff: [
            staff("zhang", "张伟"),
            staff("li", "李娜"),
            staff("wang", "王芳"),
            staff("chen", "陈静"),
            staff("zhao", "赵磊"),
        ]
        .into_iter()
        .collect(),
        residents: [
            (17, resident("r017", "王秀英", 17, &["li", "wang"])),
            (18, resident("r018", "刘桂兰", 18, &["wang"])),
        ]
        .into_iter()
        .collect(),
        rota: Rota {
            tz: TimeZone::get("Asia/Shanghai").unwrap(),
            shifts: vec![Shift {
                days: all_days,
                from: Time::constant(8, 0, 0, 0),
                to: Time::constant(20, 0, 0, 0),
                staff: strings(&["zhang"]),
            }],
        },
        escalation: Escalation {
            ack_timeouts: vec![Duration::from_secs(60), Duration::from_secs(60)],
            renotify_every: Duration::from_secs(20),
            repeat_every: Duration::from_secs(60),
            claim_timeout: Duration::from_secs(15 * 60),
            wearer_cancel: WearerCancel::Verify,
            cancel_verify_timeout: Duration::from_secs(5 * 60),
            supervisors: strings(&["chen"]),
        },
        supervision: Supervision {
            silent_after: Duration::from_secs(30 * 60),
            low_battery_pct: 20,
        },
        resolved_retention: Duration::from_secs(10 * 60),
        device_state_interval: Duration::from_secs(60),
        fallback: None,
    }
}

pub fn keyring() -> Keyring {
    [(17, DeviceKey(KEY17)), (18, DeviceKey(KEY18))]
        .into_iter()
        .collect()
}

/// Monday 2026-11-23 at `hh:mm` in Asia/Shanghai.
pub fn local(hh: i8, mm: i8) -> Timestamp {
    jiff::civil::date(2026, 11, 23)
        .at(hh, mm, 0, 0)
        .to_zoned(TimeZone::get("Asia/Shanghai").unwrap())
        .unwrap()
        .timestamp()
}

pub struct Sim {
    pub engine: Engine,
    pub setup: Setup,
    pub t0: Instant,
    pub now: Instant,
    pub wall0: Timestamp,
    pub log: String,
    /// Every output so far, with the time it left.
    pub outputs: Vec<(Duration, Output)>,
    pub seqs: std::collections::HashMap<u32, u32>,
    /// Show device states in the transcript.
    pub show_telemetry: bool,
}

impl Sim {
    pub fn new(setup: Setup, start: Timestamp) -> Sim {
        let t0 = Instant::now();
        let engine = Engine::new(setup.clone(), Intake::new(COMPANY, keyring()), t0);
        Sim {
            engine,
            setup,
            t0,
            now: t0,
            wall0: start,
            log: String::new(),
            outputs: Vec::new(),
            seqs: Default::default(),
            show_telemetry: false,
        }
    }

    pub fn at(start: Timestamp) -> Sim {
        Sim::new(setup(), start)
    }

    pub fn wall(&self) -> Timestamp {
        self.wall0 + (self.now - self.t0)
    }

    /// Both clocks now, as the engine takes them.
    pub fn clock(&self) -> Now {
        Now {
            mono: self.now,
            wall: self.wall(),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    fn stamp(&self) -> String {
        format!("t+{:.1}s", self.elapsed().as_secs_f64())
    }

    /// Moves time on by `secs`, firing every deadline on the way at its own time.
    pub fn advance(&mut self, secs: f64) {
        let target = self.now + Duration::from_secs_f64(secs);
        while let Some(due) = self.engine.poll_timeout() {
            if due > target {
                break;
            }
            self.now = due.max(self.now);
            let silences = self.engine.silences_due(self.now);
            self.engine.handle_timeout(self.clock());
            let next = self.engine.poll_timeout();
            // Progress: time moves on, or fewer silences are left to notice.
            assert!(
                next.is_none_or(|n| n > self.now) || self.engine.silences_due(self.now) < silences,
                "busy loop: poll_timeout {:?} not after handle_timeout at {:?}",
                next.map(|n| n - self.t0),
                self.elapsed()
            );
            self.drain();
        }
        self.now = target;
    }

    pub fn next_seq(&mut self, device: u32) -> u32 {
        let s = self.seqs.entry(device).or_insert(100);
        *s += 1;
        *s
    }

    pub fn frame(&mut self, device: u32, event: BandEvent) -> Heard {
        self.frame_with(device, 80, true, event)
    }

    pub fn frame_with(&mut self, device: u32, battery: u8, worn: bool, event: BandEvent) -> Heard {
        let seq = self.next_seq(device);
        self.frame_seq(device, seq, battery, worn, event)
    }

    pub fn frame_seq(
        &mut self,
        device: u32,
        seq: u32,
        battery: u8,
        worn: bool,
        event: BandEvent,
    ) -> Heard {
        let key = if device == 17 { KEY17 } else { KEY18 };
        let data = frame::seal(
            &Frame {
                device_id: device,
                seq,
                battery_pct: battery,
                worn,
                event,
            },
            COMPANY,
            &DeviceKey(key),
        );
        let heard = self.bytes(&data);
        if !matches!(event, BandEvent::Heartbeat { .. }) || self.show_telemetry {
            let _ = writeln!(
                self.log,
                "{} band {device} #{seq} {} -> {}",
                self.stamp(),
                event.name(),
                match &heard {
                    Heard::Accepted { alert_id, .. } =>
                        format!("accepted {}", alert_id.as_deref().unwrap_or("-")),
                    Heard::Rejected(r) => format!("rejected {r}"),
                }
            );
        }
        self.drain();
        heard
    }

    pub fn bytes(&mut self, data: &[u8]) -> Heard {
        self.engine.handle_frame(self.clock(), data, Some(-60))
    }

    pub fn sos(&mut self, device: u32) -> String {
        match self.frame(device, BandEvent::Sos) {
            Heard::Accepted {
                alert_id: Some(id), ..
            } => id,
            other => panic!("SOS not accepted: {other:?}"),
        }
    }

    pub fn act(&mut self, staff: &str, alert: &str, action: Action) -> Result<(), Refusal> {
        let r = self
            .engine
            .handle_action(self.clock(), staff, alert, action);
        let name = match action {
            Action::Resolve(r) => format!("resolve({})", r.as_str()),
            a => a.name().to_string(),
        };
        let _ = writeln!(
            self.log,
            "{} {staff}: {name} {alert} -> {}",
            self.stamp(),
            match r {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("refused: {e}"),
            }
        );
        self.drain();
        r
    }

    /// Replaces the engine by one restored from its snapshot, as after `kill -9` and restart
    /// `down_secs` later.
    pub fn restart(&mut self, down_secs: f64) {
        self.restart_with_clock(down_secs, 0.0);
    }

    /// `restart`, with the wall clock moved by `clock_secs` while the gateway was down
    /// (negative: the clock is behind, as on a Raspberry Pi without RTC after a power cut);
    /// it stays moved afterwards.
    pub fn restart_with_clock(&mut self, down_secs: f64, clock_secs: f64) {
        let snap = self.engine.snapshot(self.clock());
        self.now += Duration::from_secs_f64(down_secs);
        let shift = jiff::SignedDuration::try_from_secs_f64(clock_secs).unwrap();
        self.wall0 = self.wall0.checked_add(shift).unwrap();
        self.engine = Engine::restore(
            self.setup.clone(),
            Intake::new(COMPANY, keyring()),
            self.clock(),
            snap,
        );
        let _ = writeln!(
            self.log,
            "{} -- restart after {down_secs}s down{} --",
            self.stamp(),
            if clock_secs == 0.0 {
                String::new()
            } else {
                format!(", clock moved {clock_secs}s")
            }
        );
        // What start-up does: fire what is overdue at once.
        if self.engine.poll_timeout().is_some_and(|d| d <= self.now) {
            self.engine.handle_timeout(self.clock());
        }
        self.drain();
    }

    pub fn drain(&mut self) {
        while let Some(o) = self.engine.poll_output() {
            let line = match &o {
                Output::AlertChanged(a) => Some(format!(
                    "  doc {} {} {}{} tier {} notified {:?}{}{}{}{}",
                    a.id,
                    a.kind.as_str(),
                    a.state.name(),
                    if a.cancel_requested {
                        " cancel_requested"
                    } else {
                        ""
                    },
                    a.tier,
                    a.notified,
                    a.acked_by()
                        .map(|s| format!(" acked_by {s}"))
                        .unwrap_or_default(),
                    a.resolution()
                        .map(|r| format!(" resolution {}", r.as_str()))
                        .unwrap_or_default(),
                    if a.delivered_to.is_empty() {
                        String::new()
                    } else {
                        format!(" delivered_to {:?}", a.delivered_to)
                    },
                    if a.contacts.is_empty() {
                        String::new()
                    } else {
                        let c: Vec<String> = a
                            .contacts
                            .iter()
                            .map(|c| {
                                format!(
                                    "{} {}#{} {}",
                                    c.staff_id,
                                    c.channel.as_str(),
                                    c.step,
                                    c.outcome.as_str()
                                )
                            })
                            .collect();
                        format!(" contacts [{}]", c.join(", "))
                    }
                )),
                Output::Notify {
                    staff_id,
                    reason,
                    alert,
                } => Some(format!(
                    "  page {staff_id} {} {}",
                    reason.as_str(),
                    alert.id
                )),
                Output::AlertCleared { alert_id } => Some(format!("  clear {alert_id}")),
                Output::Contact(r) => Some(format!(
                    "  {} {} {} step {} {}{}",
                    r.channel.as_str(),
                    r.staff_id,
                    r.phone,
                    r.step,
                    r.alert.id,
                    if r.resume { " (resume)" } else { "" }
                )),
                Output::DeviceSilent(d) => Some(format!("  state band {} silent", d.device_id)),
                Output::DeviceState(d) => self.show_telemetry.then(|| {
                    format!(
                        "  state band {} battery {} worn {}",
                        d.device_id, d.battery_pct, d.worn
                    )
                }),
            };
            if let Some(line) = line {
                let _ = writeln!(self.log, "{} {line}", self.stamp());
            }
            self.outputs.push((self.elapsed(), o));
        }
    }

    pub fn take_log(&mut self) -> String {
        std::mem::take(&mut self.log)
    }

    /// Time of the last page (any notification) about `alert`.
    pub fn last_page(&self, alert: &str) -> Option<Duration> {
        self.outputs
            .iter()
            .rev()
            .find(|(_, o)| matches!(o, Output::Notify { alert: a, .. } if a.id == alert))
            .map(|(t, _)| *t)
    }
}
