//! How a trainer that dies says why. A panic (libtorch failing an allocation, most often) and
//! a fatal signal (a crash in native code: under an address-space limit, oneDNN can fail to
//! map a kernel it generates and then jump to it) both end the process at once with an
//! `error` and a `run_finished` record naming the reason in plain words, so that a run's
//! events tell what happened with or without a supervisor watching (a run started by hand, a
//! Slurm job).
//!
//! Out of memory is said only on evidence: libtorch naming the allocation it could not make,
//! or the process standing at a memory bound ([`Bound`]) when it failed.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::fd::IntoRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use segtop::run::events::EventLog;

const ADVICE: &str = "make the patch or batch smaller, or run fewer runs at once";

/// The run's `events.jsonl`, opened for appending when the handlers are installed: a signal
/// handler may not open files by path name safely once the process is corrupt.
static EVENTS_FD: AtomicI32 = AtomicI32::new(-1);
/// When the handlers were installed, as monotonic-clock seconds (f64 bits).
static STARTED: AtomicU64 = AtomicU64::new(0);

/// Installs the panic hook and the fatal-signal handlers for a run whose events are at
/// `events`.
pub fn install(events: PathBuf) {
    STARTED.store(monotonic_seconds().to_bits(), Ordering::Relaxed);
    if let Ok(file) = std::fs::OpenOptions::new().append(true).create(true).open(&events) {
        EVENTS_FD.store(file.into_raw_fd(), Ordering::Relaxed);
    }
    fail_fast_on_panic(events);
    for signal in [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE, libc::SIGABRT] {
        // SAFETY: the handler only makes async-signal-safe calls (read, write, open, close,
        // clock_gettime, getrlimit, raise) and touches no lock or allocator. It runs on the
        // faulting thread's own stack: its buffers (some 12 kB) do not fit the small
        // alternate stacks Rust sets up, so a stack overflow ends the trainer unrecorded.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_fatal_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESETHAND;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// A panic in training ends the process at once with the reason in the run's events:
/// unwinding through the loop would wait forever on its sampler and resource threads, and
/// the default message is pages of C++ frames.
fn fail_fast_on_panic(events: PathBuf) {
    std::panic::set_hook(Box::new(move |info| {
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let reason = panic_reason(&payload, Bound::now(false));
        // Where in segtop it happened; a library's own source file says nothing to a user.
        let place = info
            .location()
            .filter(|l| l.file().starts_with("src/"))
            .map(|l| format!(" ({}:{})", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("segtop-train: error: {reason}{place}");
        if let Ok(mut log) = EventLog::open(&events) {
            let _ = log.emit_failure(&reason, elapsed());
        }
        let _ = std::io::stdout().flush();
        std::process::exit(super::exit::FAILED);
    }));
}

/// The useful line of a panic message, with libtorch's allocation failures in plain words.
/// libtorch's own allocator names the size it could not get; oneDNN, failing to map memory
/// for a convolution, only says it "could not create a primitive", which reads as out of
/// memory when the trainer is at a memory bound.
pub fn panic_reason(message: &str, bound: Option<Bound>) -> String {
    if let Some(at) = message.find("you tried to allocate ") {
        let bytes: String = message[at + "you tried to allocate ".len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let mb = bytes
            .parse::<f64>()
            .map_or(String::new(), |b| format!(" {:.0} MB", b / 1e6));
        return format!("out of memory: libtorch could not allocate{mb} more; {ADVICE}");
    }
    let allocation = [
        "could not create a primitive",
        "std::bad_alloc",
        "can't allocate memory",
    ];
    if let Some(bound) = bound.filter(|_| allocation.iter().any(|a| message.contains(a))) {
        return format!("out of memory: libtorch could not allocate more {bound}; {ADVICE}");
    }
    let first = message.lines().next().unwrap_or("").trim();
    let first = first
        .strip_prefix("called `Result::unwrap()` on an `Err` value: ")
        .unwrap_or(first);
    let short: String = first.chars().take(300).collect();
    format!("the trainer failed: {short}")
}

/// A memory bound the trainer stands at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    /// An address-space limit (`ulimit -v`, which makes allocations fail instead of waking
    /// the OOM killer), in MiB.
    AddressSpace { limit_mib: u64 },
    /// A machine with next to nothing free, in MiB.
    Machine { available_mib: u64 },
}

impl Bound {
    /// The bound the process stands at now, if any. With `exhausted`, an address-space limit
    /// counts only when the process has mapped all but the last 64 MiB of it (a crash says
    /// nothing of its cause, so the evidence must); without, any limit counts (the caller
    /// knows an allocation failed). Allocates nothing, so a signal handler may call it.
    pub fn now(exhausted: bool) -> Option<Bound> {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct it is given.
        if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } == 0 && limit.rlim_cur != libc::RLIM_INFINITY {
            let limit_mib = limit.rlim_cur >> 20;
            let mut buffer = [0u8; 4096];
            let used_mib = read_proc(c"/proc/self/status", &mut buffer)
                .and_then(|status| field_kib(status, b"VmSize:"))
                .map(|kib| kib >> 10);
            if !exhausted || used_mib.is_some_and(|used| used + 64 >= limit_mib) {
                return Some(Bound::AddressSpace { limit_mib });
            }
        }
        let mut buffer = [0u8; 4096];
        let meminfo = read_proc(c"/proc/meminfo", &mut buffer)?;
        let total = field_kib(meminfo, b"MemTotal:")?;
        let available = field_kib(meminfo, b"MemAvailable:")?;
        (available < (256 << 10).max(total / 20)).then_some(Bound::Machine {
            available_mib: available >> 10,
        })
    }
}

impl std::fmt::Display for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bound::AddressSpace { limit_mib } => {
                write!(f, "within its address-space limit of {limit_mib} MB (ulimit -v)")
            }
            Bound::Machine { available_mib } => write!(f, "with {available_mib} MB free on this machine"),
        }
    }
}

/// The start of a `/proc` file such as `/proc/self/status`, read into `buffer` with plain
/// system calls.
fn read_proc<'a>(path: &std::ffi::CStr, buffer: &'a mut [u8]) -> Option<&'a [u8]> {
    // SAFETY: open, read and close on a buffer this function owns.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return None;
        }
        let mut len = 0;
        while len < buffer.len() {
            let n = libc::read(fd, buffer[len..].as_mut_ptr().cast(), buffer.len() - len);
            if n <= 0 {
                break;
            }
            len += n as usize;
        }
        libc::close(fd);
        Some(&buffer[..len])
    }
}

/// The number after `name` at the start of a line of `text` ("VmSize:   812345 kB").
fn field_kib(text: &[u8], name: &[u8]) -> Option<u64> {
    let line = text.split(|&b| b == b'\n').find(|line| line.starts_with(name))?;
    let digits = line[name.len()..].iter().skip_while(|b| b.is_ascii_whitespace());
    let mut value: Option<u64> = None;
    for &b in digits.take_while(|b| b.is_ascii_digit()) {
        value = Some(value.unwrap_or(0) * 10 + u64::from(b - b'0'));
    }
    value
}

/// A fatal signal: the reason goes to the log and, as `error` and `run_finished` records, to
/// the events; then the signal is raised again with its default action, so that the exit
/// status (and a core dump, where enabled) still name it.
extern "C" fn on_fatal_signal(signal: libc::c_int) {
    let reason = {
        let mut reason = Text::<512>::new();
        let _ = crash_reason(&mut reason, signal, Bound::now(true));
        reason
    };
    let mut said = Text::<600>::new();
    let _ = writeln!(said, "segtop-train: error: {}", reason.as_str());
    write_all(libc::STDERR_FILENO, said.as_bytes());
    let fd = EVENTS_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let mut lines = Text::<1600>::new();
        if !ends_with_newline(fd) {
            let _ = lines.write_char('\n');
        }
        let _ = crash_records(&mut lines, now_utc(), reason.as_str(), elapsed());
        write_all(fd, lines.as_bytes());
    }
    // SAFETY: SA_RESETHAND has restored the default action; the raised signal is delivered
    // once this handler returns.
    unsafe {
        libc::raise(signal);
    }
}

/// The reason a fatal `signal` ended the trainer, in words.
fn crash_reason(out: &mut impl std::fmt::Write, signal: libc::c_int, bound: Option<Bound>) -> std::fmt::Result {
    let name = match signal {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGABRT => "SIGABRT",
        _ => "a fatal signal",
    };
    match bound {
        Some(bound) => write!(
            out,
            "out of memory: libtorch could not allocate more {bound} and crashed ({name}); {ADVICE}"
        ),
        None => write!(out, "the trainer crashed ({name}); its log (train.log) may say more"),
    }
}

/// The `error` and `run_finished` records of a crash, as `events.jsonl` lines. `reason` is
/// segtop's own text (no quotes or backslashes to escape).
fn crash_records(out: &mut impl std::fmt::Write, time: Timestamp, reason: &str, seconds: f64) -> std::fmt::Result {
    writeln!(out, r#"{{"event":"error","time":"{time}","message":"{reason}"}}"#)?;
    writeln!(
        out,
        r#"{{"event":"run_finished","time":"{time}","outcome":"failed","reason":"{reason}","seconds":{seconds:.3}}}"#
    )
}

fn write_all(fd: libc::c_int, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: write from a live slice.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n <= 0 {
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

/// Whether the file behind `fd` is empty or ends with a newline (a record cut short by the
/// crash must not swallow the crash's own).
fn ends_with_newline(fd: libc::c_int) -> bool {
    // SAFETY: fstat and pread into locals.
    unsafe {
        let mut stat: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut stat) != 0 || stat.st_size == 0 {
            return true;
        }
        let mut last = 0u8;
        libc::pread(fd, (&mut last as *mut u8).cast(), 1, stat.st_size - 1) != 1 || last == b'\n'
    }
}

fn monotonic_seconds() -> f64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the struct it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as f64 + now.tv_nsec as f64 * 1e-9
}

/// Seconds since [`install`].
fn elapsed() -> f64 {
    (monotonic_seconds() - f64::from_bits(STARTED.load(Ordering::Relaxed))).max(0.0)
}

/// A UTC time written as RFC 3339 without the allocator (chrono's formatting allocates).
#[derive(Debug, Clone, Copy)]
struct Timestamp {
    seconds: i64,
    nanos: u32,
}

fn now_utc() -> Timestamp {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the struct it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
    Timestamp {
        seconds: now.tv_sec,
        nanos: now.tv_nsec as u32,
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let days = self.seconds.div_euclid(86_400);
        let of_day = self.seconds.rem_euclid(86_400);
        // Days since 1970-01-01 to a civil date (the proleptic Gregorian calendar).
        let shifted = days + 719_468;
        let era = shifted.div_euclid(146_097);
        let day_of_era = shifted.rem_euclid(146_097);
        let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let month_index = (5 * day_of_year + 2) / 153;
        let day = day_of_year - (153 * month_index + 2) / 5 + 1;
        let month = if month_index < 10 {
            month_index + 3
        } else {
            month_index - 9
        };
        let year = year_of_era + era * 400 + i64::from(month <= 2);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
            of_day / 3600,
            of_day % 3600 / 60,
            of_day % 60,
            self.nanos
        )
    }
}

/// Text formatted into a fixed buffer; what does not fit is cut.
struct Text<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Text<N> {
    fn new() -> Self {
        Text { bytes: [0; N], len: 0 }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    fn as_str(&self) -> &str {
        // Only whole `str`s are written in, so the bytes stay UTF-8 up to a cut.
        match std::str::from_utf8(self.as_bytes()) {
            Ok(text) => text,
            Err(error) => std::str::from_utf8(&self.bytes[..error.valid_up_to()]).unwrap_or_default(),
        }
    }
}

impl<const N: usize> std::fmt::Write for Text<N> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let room = N - self.len;
        let take = s.len().min(room);
        self.bytes[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        if take < s.len() { Err(std::fmt::Error) } else { Ok(()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use segtop::run::events::{Event, Outcome};

    #[test]
    fn panics_read_as_plain_reasons() {
        let torch = "called `Result::unwrap()` on an `Err` value: Torch(\"[enforce fail at alloc_cpu.cpp:127] err == 0. \
                     DefaultCPUAllocator: can't allocate memory: you tried to allocate 150994944 bytes. Error code 12\nframe #0: ...";
        assert_eq!(
            panic_reason(torch, None),
            "out of memory: libtorch could not allocate 151 MB more; make the patch or batch smaller, or run fewer runs at once"
        );
        let other = panic_reason(
            "called `Result::unwrap()` on an `Err` value: Shape mismatch\nmore",
            None,
        );
        assert_eq!(other, "the trainer failed: Shape mismatch");
        // oneDNN names no size: out of memory only at a memory bound.
        let onednn = "called `Result::unwrap()` on an `Err` value: Torch(\"could not create a primitive\")";
        assert_eq!(
            panic_reason(onednn, Some(Bound::AddressSpace { limit_mib: 800 })),
            "out of memory: libtorch could not allocate more within its address-space limit of 800 MB (ulimit -v); \
             make the patch or batch smaller, or run fewer runs at once"
        );
        assert_eq!(
            panic_reason(onednn, None),
            "the trainer failed: Torch(\"could not create a primitive\")"
        );
        // A bound does not turn every failure into one of memory.
        assert_eq!(
            panic_reason("Shape mismatch", Some(Bound::Machine { available_mib: 12 })),
            "the trainer failed: Shape mismatch"
        );
    }

    #[test]
    fn crash_records_are_events_segtop_reads() {
        let mut reason = Text::<512>::new();
        crash_reason(&mut reason, libc::SIGSEGV, Some(Bound::AddressSpace { limit_mib: 800 })).expect("fits");
        assert_eq!(
            reason.as_str(),
            "out of memory: libtorch could not allocate more within its address-space limit of 800 MB (ulimit -v) \
             and crashed (SIGSEGV); make the patch or batch smaller, or run fewer runs at once"
        );
        let time = Timestamp {
            seconds: 1_796_374_567,
            nanos: 66_097_979,
        };
        let mut lines = Text::<1600>::new();
        crash_records(&mut lines, time, reason.as_str(), 1.25).expect("fits");
        let events: Vec<Event> = std::str::from_utf8(lines.as_bytes())
            .expect("UTF-8")
            .lines()
            .map(|line| Event::from_line(line).expect("a record"))
            .collect();
        let expected_time = chrono::DateTime::from_timestamp(1_796_374_567, 66_097_979).expect("a time");
        match &events[..] {
            [
                Event::Error { time, message },
                Event::RunFinished {
                    time: finished,
                    outcome: Outcome::Failed,
                    reason: Some(said),
                    seconds,
                    ..
                },
            ] => {
                assert_eq!((*time, *finished), (expected_time, expected_time));
                assert_eq!((message.as_str(), said.as_str()), (reason.as_str(), reason.as_str()));
                assert_eq!(*seconds, 1.25);
            }
            other => panic!("{other:?}"),
        }
        let mut plain = Text::<512>::new();
        crash_reason(&mut plain, libc::SIGBUS, None).expect("fits");
        assert_eq!(
            plain.as_str(),
            "the trainer crashed (SIGBUS); its log (train.log) may say more"
        );
    }

    #[test]
    fn timestamps_match_chrono_across_calendar_edges() {
        // Leap days, year and century ends, the epoch, and dates far from it.
        for seconds in [
            0,
            951_782_400,
            951_868_799,
            1_709_164_800,
            4_107_542_399,
            4_107_542_400,
            1_796_374_567,
            253_402_300_799,
        ] {
            let ours = Timestamp { seconds, nanos: 5 }.to_string();
            let chrono = chrono::DateTime::from_timestamp(seconds, 5)
                .expect("a time")
                .format("%Y-%m-%dT%H:%M:%S.%9fZ")
                .to_string();
            assert_eq!(ours, chrono, "{seconds}");
        }
    }

    #[test]
    fn proc_fields_are_read_in_kib() {
        let status = b"Name:\tsegtop-train\nVmPeak:\t  819000 kB\nVmSize:\t  812345 kB\n";
        assert_eq!(field_kib(status, b"VmSize:"), Some(812_345));
        assert_eq!(field_kib(status, b"VmRSS:"), None);
        assert_eq!(field_kib(b"VmSize:\t kB\n", b"VmSize:"), None);
        let mut buffer = [0u8; 4096];
        let status = read_proc(c"/proc/self/status", &mut buffer).expect("readable");
        assert!(field_kib(status, b"VmSize:").is_some_and(|kib| kib > 0));
    }

    #[test]
    fn text_cuts_what_does_not_fit() {
        let mut text = Text::<8>::new();
        assert!(text.write_str("0123456789").is_err());
        assert_eq!(text.as_str(), "01234567");
    }
}
