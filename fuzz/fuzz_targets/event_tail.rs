//! Any bytes appended to `events.jsonl` in any pieces, read by an `EventTail` polling between
//! the pieces, give the same records and the same number of "not an event record" warnings
//! as reading each complete line of the file whole with `Event::from_line`: never a panic,
//! never a record lost or doubled at a piece boundary, half-written last lines held back.
//!
//! The input is the file's bytes with two markers, neither of which can appear in UTF-8:
//! 0xFF ends a piece (append it, then poll) and 0xFE truncates the file to nothing (poll,
//! truncate, poll: the tail must notice it shrank and read it again from the start).
#![no_main]

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use segtop::run::events::{Event, EventTail};

const POLL: u8 = 0xFF;
const TRUNCATE: u8 = 0xFE;

/// One file per fuzzing process, emptied for each input.
fn path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("segtop-fuzz-event-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir.join("events.jsonl")
    })
}

/// The records in the complete lines of `content` read whole, and how many of those lines
/// (not blank) are not records.
fn read_whole(content: &[u8]) -> (Vec<Event>, usize) {
    let mut events = Vec::new();
    let mut bad = 0;
    let complete = match content.iter().rposition(|&b| b == b'\n') {
        Some(end) => &content[..end],
        None => return (events, bad),
    };
    for line in complete.split(|&b| b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match std::str::from_utf8(line)
            .ok()
            .and_then(|text| Event::from_line(text).ok())
        {
            Some(event) => events.push(event),
            None => bad += 1,
        }
    }
    (events, bad)
}

struct Reader {
    tail: EventTail,
    events: Vec<Event>,
    bad: usize,
}

impl Reader {
    fn poll(&mut self) {
        let (events, warnings) = self.tail.poll().expect("poll reads the file");
        self.bad += warnings.iter().filter(|w| w.contains("not an event record")).count();
        for event in &events {
            // What the trainer writes back is one line that reads again.
            let line = event.to_line();
            assert_eq!(line.matches('\n').count(), 1, "{line:?}");
            assert!(line.ends_with('\n'));
            Event::from_line(&line).expect("a written record reads back");
        }
        self.events.extend(events);
    }
}

fuzz_target!(|data: &[u8]| {
    let path = path();
    let mut file: File = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open the events file");
    file.set_len(0).expect("empty the events file");
    let mut reader = Reader {
        tail: EventTail::new(path),
        events: Vec::new(),
        bad: 0,
    };
    let (mut want_events, mut want_bad) = (Vec::new(), 0);
    let mut content = Vec::new();
    for (i, segment) in data.split(|&b| b == TRUNCATE).enumerate() {
        if i > 0 {
            reader.poll();
            file.set_len(0).expect("truncate");
            reader.poll();
        }
        content.clear();
        for piece in segment.split(|&b| b == POLL) {
            file.write_all(piece).expect("append");
            content.extend_from_slice(piece);
            reader.poll();
        }
        let (events, bad) = read_whole(&content);
        want_events.extend(events);
        want_bad += bad;
    }
    assert_eq!(reader.events, want_events);
    assert_eq!(reader.bad, want_bad);
    // The complete lines of what is in the file now end where the tail says.
    let end = content.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let lines = content.iter().filter(|&&b| b == b'\n').count() as u64;
    assert_eq!(reader.tail.position(), (end as u64, lines + 1));
});
