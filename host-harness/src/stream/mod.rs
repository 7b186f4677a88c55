//! Requests in flight: a stream's state and the requests host calls make of it. Driven through
//! the chain by `crate::chain`.

mod state;

pub(crate) use state::{LocalReply, Stage, Stream};
