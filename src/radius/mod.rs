//! RADIUS: the packet codec (pure bytes ↔ packet), the dictionary, the client table, what an
//! Accounting-Request means, the reply cache, the UDP listener and its batched system calls.

pub mod accounting;
pub mod clients;
pub mod codec;
pub mod dictionary;
pub mod listener;
pub mod mmsg;
pub mod rate_limit;
pub mod reply;
