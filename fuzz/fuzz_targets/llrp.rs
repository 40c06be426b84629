//! LLRP messages from a reader's TCP stream: framing, TLV/TV parameter
//! walks, every length field. Besides "never panics", the splitter must
//! cut the same messages however the stream arrives, and every decoding
//! error must name a byte inside the message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storegate::codecs::llrp::{Splitter, decode};

/// Messages and decode results, or where the stream fell out of step.
fn run(stream: &[u8], chunk: usize) -> (Vec<String>, bool) {
    let mut out = Vec::new();
    let mut splitter = Splitter::new();
    for piece in stream.chunks(chunk) {
        splitter.push(piece);
        loop {
            match splitter.next_frame() {
                Ok(Some(frame)) => {
                    let len = frame.bytes.len();
                    let result = decode(&frame);
                    if let Err(e) = &result {
                        assert!(e.offset <= len, "error offset {} beyond message of {len}", e.offset);
                        assert!(!e.what.is_empty(), "error without text");
                    }
                    out.push(format!("{result:?}"));
                }
                Ok(None) => break,
                Err(_) => return (out, false),
            }
        }
    }
    (out, true)
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let whole = run(stream, stream.len().max(1));
    let chunked = run(stream, usize::from(split).max(1));
    assert_eq!(whole, chunked, "messages depend on how the stream was split");
});
