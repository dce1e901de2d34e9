//! The one-line human summary of an alert (`text`), in the deployment's language, so that a
//! plain MQTT phone app can show it as is.

use crate::engine::{Alert, Grouping, Kind, Locale, Resolution, Setup, SilentBands, State};

/// `【紧急求救】王秀英（广惠园社区 3号楼 2单元 401）按下求救键，张伟已确认前往`.
pub fn summary(alert: &Alert, setup: &Setup) -> String {
    match setup.locale {
        Locale::ZhCn => zh(alert, setup),
        Locale::En => en(alert, setup),
    }
}

/// Who the alert is about: the resident with their address, else the band's number.
fn subject(alert: &Alert, setup: &Setup, locale: Locale) -> String {
    match (
        alert.device_id,
        alert.device_id.and_then(|d| setup.resident(d)),
    ) {
        (_, Some(r)) => match locale {
            Locale::ZhCn => format!("{}（{}）", r.name, r.address),
            Locale::En => format!("{} ({})", r.name, r.address),
        },
        (Some(d), None) => match locale {
            Locale::ZhCn => format!("{d}号手环"),
            Locale::En => format!("band {d}"),
        },
        (None, None) => match locale {
            Locale::ZhCn => "未知手环".to_owned(),
            Locale::En => "unknown band".to_owned(),
        },
    }
}

fn silent_minutes(setup: &Setup) -> u64 {
    setup.supervision.silent_after.as_secs() / 60
}

/// The bands a notice of many silent bands names: residents' names, else band numbers.
fn named(b: &SilentBands, setup: &Setup, locale: Locale) -> String {
    let names: Vec<String> = b
        .named
        .iter()
        .map(|d| match (setup.resident(*d), locale) {
            (Some(r), _) => r.name.clone(),
            (None, Locale::ZhCn) => format!("{d}号手环"),
            (None, Locale::En) => format!("band {d}"),
        })
        .collect();
    match locale {
        Locale::ZhCn => names.join("、"),
        Locale::En => names.join(", "),
    }
}

fn zh(alert: &Alert, setup: &Setup) -> String {
    let who = subject(alert, setup, Locale::ZhCn);
    let mut s = match alert.kind {
        Kind::Sos => format!("【紧急求救】{who}按下求救键"),
        Kind::Fall => format!("【跌倒报警】{who}检测到跌倒"),
        Kind::NoMotion => format!("【长时间未动】{who}长时间未活动"),
        Kind::DeviceSilent => format!(
            "【手环失联】{who}的手环已 {} 分钟未收到信号",
            silent_minutes(setup)
        ),
        Kind::LowBattery => match alert.battery_pct {
            Some(p) => format!("【电量低】{who}手环电量 {p}%"),
            None => format!("【电量低】{who}手环电量低"),
        },
        Kind::Test => "【测试】这是一条测试报警，请点确认".to_owned(),
        Kind::GatewayFault => format!(
            "【网关故障】网关 {} 的报警记录已丢失或无法保存，未处理的报警可能已丢失：\
             请电话确认各位老人是否安好，并检查网关的存储（state_dir 所在磁盘）和日志\
             （journalctl -u bandgate）。详情：{}",
            setup.gateway_id,
            alert.detail.as_deref().unwrap_or("-")
        ),
    };
    if let Grouping::Notice(b) = &alert.grouping {
        s = format!(
            "【大量手环失联】{} 个手环已 {} 分钟未收到信号（{}等），请检查网关的无线电或蓝牙适配器",
            b.count,
            silent_minutes(setup),
            named(b, setup, Locale::ZhCn)
        );
    }
    if alert.presses.fault_suspected {
        s += &format!("（{} 次按键，手环疑似故障）", alert.presses.count);
    }
    match &alert.state {
        State::Open { .. } => {}
        State::Acknowledged { claim, .. } => {
            s += &format!("，{}已确认前往", setup.staff_name(&claim.by))
        }
        State::OnScene { claim, .. } => s += &format!("，{}已到场", setup.staff_name(&claim.by)),
        State::Resolved { closure, .. } => {
            s += &format!("，已处理（{}）", zh_resolution(closure.resolution));
        }
    }
    if alert.cancel_requested && !alert.is_resolved() {
        s += "，老人已取消，请电话确认";
    }
    s
}

fn zh_resolution(r: Resolution) -> &'static str {
    match r {
        Resolution::RealEmergency => "真实紧急情况",
        Resolution::FalseAlarm => "误报",
        Resolution::WearerCancelVerified => "老人取消，已确认",
        Resolution::Test => "测试",
        Resolution::Duplicate => "重复报警",
        Resolution::DeviceFault => "设备故障",
        Resolution::Other => "其他",
    }
}

fn en(alert: &Alert, setup: &Setup) -> String {
    let who = subject(alert, setup, Locale::En);
    let mut s = match alert.kind {
        Kind::Sos => format!("[SOS] {who} pressed the SOS button"),
        Kind::Fall => format!("[Fall] {who}: fall detected"),
        Kind::NoMotion => format!("[No motion] {who} has not moved for a long time"),
        Kind::DeviceSilent => format!(
            "[Band silent] no signal from the band of {who} for {} min",
            silent_minutes(setup)
        ),
        Kind::LowBattery => match alert.battery_pct {
            Some(p) => format!("[Low battery] band of {who} at {p}%"),
            None => format!("[Low battery] band of {who} is low"),
        },
        Kind::Test => "[Test] This is a test alert, please acknowledge".to_owned(),
        Kind::GatewayFault => format!(
            "[Gateway fault] gateway {} lost its alert records or cannot keep them, so open \
             alerts may have been lost: check on the residents by phone, and check the \
             gateway's storage (the disk of state_dir) and its log (journalctl -u bandgate). \
             Detail: {}",
            setup.gateway_id,
            alert.detail.as_deref().unwrap_or("-")
        ),
    };
    if let Grouping::Notice(b) = &alert.grouping {
        s = format!(
            "[Bands silent] {} bands silent for {} min — radio or adapter? ({}, …)",
            b.count,
            silent_minutes(setup),
            named(b, setup, Locale::En)
        );
    }
    if alert.presses.fault_suspected {
        s += &format!(" ({} presses: probable device fault)", alert.presses.count);
    }
    match &alert.state {
        State::Open { .. } => {}
        State::Acknowledged { claim, .. } => {
            s += &format!(", {} is on the way", setup.staff_name(&claim.by))
        }
        State::OnScene { claim, .. } => {
            s += &format!(", {} is on scene", setup.staff_name(&claim.by))
        }
        State::Resolved { closure, .. } => {
            s += &format!(", resolved ({})", en_resolution(closure.resolution));
        }
    }
    if alert.cancel_requested && !alert.is_resolved() {
        s += ", cancelled by the wearer: please verify by phone";
    }
    s
}

fn en_resolution(r: Resolution) -> &'static str {
    match r {
        Resolution::RealEmergency => "real emergency",
        Resolution::FalseAlarm => "false alarm",
        Resolution::WearerCancelVerified => "cancelled by the wearer, verified",
        Resolution::Test => "test",
        Resolution::Duplicate => "duplicate",
        Resolution::DeviceFault => "device fault",
        Resolution::Other => "other",
    }
}
