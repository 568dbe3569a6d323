//! The streaming opener fed a mutated valid message, in pieces of varying
//! sizes, in both suites (the input is opened as suite 1 and as suite 2;
//! the commitment check turns away the other suite's messages at once).
//! Seeds: the C2SP known answers of both suites and messages of other
//! lengths under their key, salt and context (among them 32 bytes: the
//! shape of a version-2 object's sealed digest, one final chunk).
//!
//! Invariants: no panic; every released byte is the pattern at its offset
//! (a chunk is released only once it authenticated at its index); a message
//! that opens completely is the one valid message of its length and suite.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sealgate::crypto::chunked::{self, Opener};
use sealgate::crypto::Suite;
use sealgate_fuzz::{kat_message, pattern_byte, KAT_CONTEXT, KAT_KEY};

/// Piece sizes cycled through, so that pushes cross chunk boundaries at
/// every phase.
const PIECES: [usize; 6] = [1, 4099, 16400, 7, 16399, 65536];

fuzz_target!(|data: &[u8]| {
    for suite in Suite::ALL {
        open_in(suite, data);
    }
});

fn open_in(suite: Suite, data: &[u8]) {
    let split = data.len().min(chunked::HEADER_LEN);
    let Ok(mut opener) = Opener::new_in(suite, &KAT_KEY, KAT_CONTEXT, &data[..split]) else {
        return;
    };
    let mut rest = &data[split..];
    let mut out = Vec::new();
    let mut ok = true;
    let first = data.len() % PIECES.len();
    for n in PIECES.iter().cycle().skip(first) {
        if rest.is_empty() {
            break;
        }
        let (piece, tail) = rest.split_at((*n).min(rest.len()));
        rest = tail;
        if opener.push(piece, &mut out).is_err() {
            ok = false;
            // Poisoned: it keeps failing and releases nothing more.
            let before = out.len();
            assert!(opener.push(tail, &mut out).is_err());
            assert_eq!(out.len(), before);
            break;
        }
    }
    let finished = ok && opener.finish(&mut out).is_ok();
    for (i, b) in out.iter().enumerate() {
        assert_eq!(
            *b,
            pattern_byte(i as u64),
            "unauthenticated plaintext released"
        );
    }
    if finished {
        assert_eq!(
            data,
            &kat_message(suite, out.len() as u64)[..],
            "a mutated message opened"
        );
    }
}
