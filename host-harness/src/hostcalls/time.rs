//! Time: the host clock (virtual or real) and each root context's tick period.

use super::{ok, put_u64, res, C, R};
use crate::runtime::Event;

pub(super) fn proxy_get_current_time_nanoseconds(c: &mut C<'_>, return_time: i32) -> R {
    let now = c.data().shared.clock.realtime_ns();
    res(put_u64(c, return_time, now))
}

/// A new period starts a new tick generation: ticks of the old one are dropped when they fire.
pub(super) fn proxy_set_tick_period_milliseconds(c: &mut C<'_>, period: i32) -> R {
    let (thread, filter) = (c.data().thread, c.data().cur_vm);
    let generation = {
        let vm = c.data_mut().vm_mut();
        vm.tick_generation += 1;
        vm.tick_period_ms = period as u32;
        vm.tick_generation
    };
    if period as u32 > 0 {
        let delay = u64::from(period as u32) * 1_000_000;
        c.data().shared.schedule(
            delay,
            Event::Tick {
                thread,
                filter,
                generation,
            },
        );
    }
    ok()
}
