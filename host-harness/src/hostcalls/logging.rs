//! Logging: `proxy_log` (lines below the plugin's level are dropped, as Envoy does) and 0.2.1's
//! `proxy_get_log_level`.

use meshward_abi::LogLevel;

use super::{ok, put_u32, read, res, st, C, R};
use crate::Status;

pub(super) fn proxy_log(c: &mut C<'_>, level: i32, message_data: i32, message_size: i32) -> R {
    let Ok(level) = LogLevel::try_from(level as u32) else {
        return st(Status::BAD_ARGUMENT);
    };
    let msg = read!(c, message_data, message_size);
    if level >= c.data().vm().info.log_level {
        c.data_mut()
            .log(level, String::from_utf8_lossy(&msg).into_owned());
    }
    ok()
}

pub(super) fn proxy_get_log_level(c: &mut C<'_>, return_level: i32) -> R {
    let level = c.data().vm().info.log_level as u32;
    res(put_u32(c, return_level, level))
}
