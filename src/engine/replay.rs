//! Per-device anti-replay window (RFC 4303 §3.4.3, RFC 6479): the highest accepted `seq` and a
//! bitmap of the 64 seqs ending at it, in 16 bytes per band whatever the traffic.
//!
//! It drops every repeat of a frame (a band re-sends each frame many times, several gateways
//! hear it) and refuses a recorded frame replayed later. The caller checks only frames whose
//! tag verified, so a forged seq can never move the window.

use super::frame::Reject;

/// Width of the window in seqs, the top one included.
pub const WINDOW: u32 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplayWindow {
    /// `None` until the first frame of this band is accepted.
    top: Option<u32>,
    /// Bit `i` set: `top - i` was accepted.
    seen: u64,
}

impl ReplayWindow {
    pub fn new() -> ReplayWindow {
        ReplayWindow::default()
    }

    /// Rebuilds a window from its stored form (see `to_parts`).
    pub fn from_parts(top: Option<u32>, seen: u64) -> ReplayWindow {
        ReplayWindow { top, seen }
    }

    /// The stored form: highest accepted seq and the bitmap.
    pub fn to_parts(&self) -> (Option<u32>, u64) {
        (self.top, self.seen)
    }

    /// Would `seq` be accepted? Does not change the window.
    pub fn check(&self, seq: u32) -> Result<(), Reject> {
        let Some(top) = self.top else {
            return Ok(());
        };
        if seq > top {
            return Ok(());
        }
        let offset = top - seq;
        if offset >= WINDOW {
            return Err(Reject::Stale);
        }
        if self.seen & (1u64 << offset) != 0 {
            return Err(Reject::Duplicate);
        }
        Ok(())
    }

    /// Checks `seq` and, if it passes, records it.
    pub fn accept(&mut self, seq: u32) -> Result<(), Reject> {
        self.check(seq)?;
        match self.top {
            Some(top) if seq <= top => self.seen |= 1u64 << (top - seq),
            Some(top) => {
                let shift = seq - top;
                self.seen = if shift >= WINDOW {
                    0
                } else {
                    self.seen << shift
                } | 1;
                self.top = Some(seq);
            }
            None => {
                self.top = Some(seq);
                self.seen = 1;
            }
        }
        Ok(())
    }
}

impl ReplayWindow {
    /// A BTHome counter (`bthome.md`): accepted only when newer than every counter accepted
    /// before (no window: a device sends its frames in order). The same counter again is a
    /// `duplicate` (devices repeat a frame to be heard), an older one `stale`. Stored in the
    /// same form as a band's window (`top` = the last counter).
    pub fn accept_counter(&mut self, counter: u32) -> Result<(), Reject> {
        match self.top {
            Some(top) if counter == top => Err(Reject::Duplicate),
            Some(top) if counter < top => Err(Reject::Stale),
            _ => {
                self.top = Some(counter);
                self.seen = 1;
                Ok(())
            }
        }
    }

    /// The last counter or seq accepted.
    pub fn top(&self) -> Option<u32> {
        self.top
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_of_the_window() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.accept(100), Ok(()));
        assert_eq!(w.accept(100 - 63), Ok(()));
        assert_eq!(w.accept(100 - 64), Err(Reject::Stale));
        assert_eq!(w.accept(100 - 63), Err(Reject::Duplicate));
        // A jump wider than the window forgets everything below it.
        assert_eq!(w.accept(1000), Ok(()));
        assert_eq!(w.accept(999), Ok(()));
        assert_eq!(w.accept(100), Err(Reject::Stale));
        assert_eq!(w.accept(u32::MAX), Ok(()));
        assert_eq!(w.accept(u32::MAX), Err(Reject::Duplicate));
        assert_eq!(w.accept(0), Err(Reject::Stale));
    }

    #[test]
    fn a_counter_must_grow() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.accept_counter(5), Ok(()));
        assert_eq!(w.accept_counter(5), Err(Reject::Duplicate));
        assert_eq!(w.accept_counter(4), Err(Reject::Stale));
        assert_eq!(w.accept_counter(0), Err(Reject::Stale));
        assert_eq!(w.accept_counter(6), Ok(()));
        assert_eq!(w.accept_counter(u32::MAX), Ok(()));
        assert_eq!(w.accept_counter(u32::MAX), Err(Reject::Duplicate));
        assert_eq!(w.top(), Some(u32::MAX));
    }

    #[test]
    fn first_frame_may_be_any_seq() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.accept(0), Ok(()));
        assert_eq!(w.accept(0), Err(Reject::Duplicate));
        let mut w = ReplayWindow::from_parts(None, 0);
        assert_eq!(w.accept(u32::MAX), Ok(()));
    }
}
