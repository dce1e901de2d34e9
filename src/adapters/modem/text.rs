//! The fallback SMS: one message (at most 70 UCS-2 code units, the limit of one SMS holding
//! Chinese): who, where, what, and where to look.

use crate::engine::{Alert, Kind, Locale, Setup};

/// One SMS in UCS-2 holds 70 code units.
pub const SMS_UNITS: usize = 70;

fn units(s: &str) -> usize {
    s.encode_utf16().count()
}

/// Cuts `s` to at most `max` UTF-16 units, on a character boundary.
fn cut(s: &str, max: usize) -> String {
    let mut out = String::new();
    let mut n = 0;
    for c in s.chars() {
        n += c.len_utf16();
        if n > max {
            break;
        }
        out.push(c);
    }
    out
}

/// E.g. `【社区呼叫】王秀英 3号楼2单元401 紧急求救，请打开值班页`. The address is shortened
/// (spaces dropped, then cut from the front: the building and flat are at its end) so the
/// whole text fits one SMS.
pub fn sms_text(alert: &Alert, setup: &Setup) -> String {
    let resident = alert.device_id.and_then(|d| setup.resident(d));
    let (name, address) = match resident {
        Some(r) => (r.name.as_str(), r.address.replace([' ', '\u{3000}'], "")),
        None => ("", String::new()),
    };
    let (head, what, tail) = match setup.locale {
        Locale::ZhCn => (
            "【社区呼叫】",
            match alert.kind {
                Kind::Sos => "紧急求救",
                Kind::Fall => "跌倒报警",
                Kind::NoMotion => "长时间未动",
                Kind::Test => "测试呼叫",
                _ => "需要处理",
            },
            "，请打开值班页",
        ),
        Locale::En => (
            "[Call] ",
            match alert.kind {
                Kind::Sos => "SOS",
                Kind::Fall => "fall",
                Kind::NoMotion => "no motion",
                Kind::Test => "test call",
                _ => "needs you",
            },
            ". Open the duty page",
        ),
    };
    let name = cut(name, 12);
    let fixed = units(head) + units(&name) + units(what) + units(tail) + 2;
    let room = SMS_UNITS.saturating_sub(fixed);
    // Keep the end of the address (building, unit, flat); the community's name goes first.
    let addr_units = units(&address);
    let address: String = if addr_units <= room {
        address
    } else {
        let chars: Vec<char> = address.chars().collect();
        let mut n = 0;
        let mut start = chars.len();
        while start > 0 && n + chars[start - 1].len_utf16() <= room {
            start -= 1;
            n += chars[start].len_utf16();
        }
        chars[start..].iter().collect()
    };
    let text = if name.is_empty() && address.is_empty() {
        // A test alert: nobody's name, no address.
        format!("{head}{what}{tail}")
    } else if address.is_empty() {
        format!("{head}{name} {what}{tail}")
    } else {
        format!("{head}{name} {address} {what}{tail}")
    };
    cut(&text, SMS_UNITS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_one_sms() {
        assert_eq!(cut("王秀英abc", 4), "王秀英a");
        assert_eq!(
            units("【社区呼叫】王秀英 3号楼2单元401 紧急求救，请打开值班页"),
            31
        );
    }
}
