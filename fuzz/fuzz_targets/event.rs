//! Whatever arrives on the channel, the event parser answers with an event or a rejection that
//! names what was wrong, never a panic; an accepted event survives its own JSON.
//!
//! `cargo fuzz run event` (cargo-fuzz; `RUSTC_BOOTSTRAP=1` on a stable toolchain).
#![no_main]

use libfuzzer_sys::fuzz_target;
use notifier::event::{Preview, TalkPosted};

fuzz_target!(|message: &[u8]| {
    match TalkPosted::parse(message) {
        Ok(event) => {
            assert!(event.talk_id > 0);
            assert_eq!(TalkPosted::parse(event.to_json().as_bytes()), Ok(event));
        }
        Err(rejection) => assert!(!rejection.to_string().is_empty()),
    }
    let _ = Preview(message).to_string();
});
