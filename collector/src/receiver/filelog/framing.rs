//! From bytes to records: lines split at newlines, joined by a `multiline` rule or by the
//! container runtimes' partial-line flags, and cut at `max_log_size`. Each record knows where
//! in its file it ends, so that a file's offset moves only past whole records.

use std::time::Duration;

use regex::bytes::Regex;

use super::container::{self, Piece};

/// How lines become records.
#[derive(Clone, Debug)]
pub struct Framing {
    pub rule: Rule,
    /// The longest record kept whole; longer ones are cut to it and flagged.
    pub max_log_size: usize,
    /// How long a last record that may not be complete (no newline yet, a multiline record
    /// that may go on, a partial container line) waits before it is taken as it is.
    pub flush_after: Duration,
}

#[derive(Clone, Debug)]
pub enum Rule {
    /// A record per line.
    Lines,
    /// A record starts at each line that matches.
    StartsAt(Regex),
    /// A record ends at each line that matches.
    EndsAt(Regex),
    /// A record per line the container runtime wrote, its pieces joined.
    Container,
}

/// A record read from a file.
#[derive(Debug, PartialEq)]
pub struct Record {
    pub body: Vec<u8>,
    /// From the container runtime: when it was written, and the stream.
    pub time_unix_nano: u64,
    pub stream: Option<String>,
    /// Cut at `max_log_size`.
    pub truncated: bool,
    /// The file's offset after it.
    pub end: u64,
}

/// What [`Framing::split`] made of a buffer.
#[derive(Debug, Default)]
pub struct Split {
    pub records: Vec<Record>,
    /// Where the file continues after the last record taken: what follows is read again.
    pub next: u64,
    /// Whether data past `next` waits for more (a record not known to be complete).
    pub waiting: bool,
    /// Whether the last record was a line cut at `max_log_size` with no newline yet: the
    /// rest of that line is to be skipped.
    pub skip_rest_of_line: bool,
}

impl Framing {
    /// Splits `buffer`, read from the file at `start`, into records. A last record that may
    /// not be complete is left for the next read, unless `flush` (it waited long enough) or
    /// `full` (the buffer is as large as a read gets, so it cannot wait for more) says to take
    /// it as it is.
    pub fn split(&self, buffer: &[u8], start: u64, flush: bool, full: bool) -> Split {
        let mut lines = Vec::new();
        let mut at = 0;
        while at < buffer.len() {
            match buffer[at..].iter().position(|b| *b == b'\n') {
                Some(n) => {
                    lines.push(Line {
                        bytes: &buffer[at..at + n],
                        end: start + (at + n + 1) as u64,
                        complete: true,
                    });
                    at += n + 1;
                }
                None => {
                    lines.push(Line {
                        bytes: &buffer[at..],
                        end: start + buffer.len() as u64,
                        complete: false,
                    });
                    break;
                }
            }
        }
        // A line too long to wait for its end is taken as it is, cut.
        let long_tail = lines
            .last()
            .is_some_and(|l| !l.complete && l.bytes.len() >= self.max_log_size);
        let mut groups = self.group(&lines, flush || long_tail);
        if groups.is_empty() && full {
            groups = self.group(&lines, true);
        }
        let mut split = Split {
            next: start,
            ..Split::default()
        };
        for group in groups {
            let end = group.last().map_or(start, |l| l.end);
            let mut record = self.record(group);
            record.end = end;
            if record.body.len() > self.max_log_size {
                record.body.truncate(self.max_log_size);
                record.truncated = true;
            }
            split.skip_rest_of_line = group.last().is_some_and(|l| !l.complete) && record.truncated;
            split.next = end;
            split.records.push(record);
        }
        split.waiting = split.next < start + buffer.len() as u64;
        split
    }

    /// The lines in records: the complete ones, and with `take_all` the last too.
    fn group<'a, 'b>(&self, lines: &'b [Line<'a>], take_all: bool) -> Vec<&'b [Line<'a>]> {
        let mut groups = Vec::new();
        let mut first = 0;
        for (i, line) in lines.iter().enumerate() {
            let is_last = i + 1 == lines.len();
            let ends = match &self.rule {
                Rule::Lines => line.complete,
                Rule::EndsAt(pattern) => line.complete && pattern.is_match(line.bytes),
                // A record ends where the next one starts.
                Rule::StartsAt(pattern) => lines
                    .get(i + 1)
                    .is_some_and(|next| next.complete && pattern.is_match(next.bytes)),
                Rule::Container => {
                    line.complete && container::parse(line.bytes).is_none_or(|p| p.last)
                }
            };
            if ends || (is_last && take_all) {
                groups.push(&lines[first..=i]);
                first = i + 1;
            }
        }
        groups
    }

    fn record(&self, lines: &[Line<'_>]) -> Record {
        let mut record = Record {
            body: Vec::new(),
            time_unix_nano: 0,
            stream: None,
            truncated: false,
            end: 0,
        };
        for (i, line) in lines.iter().enumerate() {
            match &self.rule {
                Rule::Container => match container::parse(line.bytes) {
                    Some(Piece {
                        time_unix_nano,
                        stream,
                        log,
                        ..
                    }) => {
                        if record.stream.is_none() {
                            record.time_unix_nano = time_unix_nano;
                            record.stream = Some(stream);
                        }
                        record.body.extend_from_slice(&log);
                    }
                    // Not a container runtime's line: kept as it is.
                    None => record.body.extend_from_slice(line.bytes),
                },
                _ => {
                    if i > 0 {
                        record.body.push(b'\n');
                    }
                    record.body.extend_from_slice(line.bytes);
                }
            }
            // Past the cut, the rest is not kept.
            if record.body.len() > self.max_log_size {
                break;
            }
        }
        record
    }
}

struct Line<'a> {
    bytes: &'a [u8],
    /// The file's offset after it (and its newline).
    end: u64,
    /// Whether it ends with a newline.
    complete: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framing(rule: Rule) -> Framing {
        Framing {
            rule,
            max_log_size: 16,
            flush_after: Duration::from_millis(500),
        }
    }

    fn bodies(split: &Split) -> Vec<String> {
        split
            .records
            .iter()
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .collect()
    }

    #[test]
    fn lines_wait_for_their_newline_unless_flushed() {
        let lines = framing(Rule::Lines);
        let split = lines.split(b"one\ntwo\nthr", 100, false, false);
        assert_eq!(bodies(&split), ["one", "two"]);
        assert_eq!(split.records[1].end, 108);
        assert_eq!(split.next, 108);
        assert!(split.waiting);
        let flushed = lines.split(b"thr", 108, true, false);
        assert_eq!(bodies(&flushed), ["thr"]);
        assert_eq!((flushed.next, flushed.waiting), (111, false));
        // An empty line is a record; nothing at all is none.
        assert_eq!(bodies(&lines.split(b"\n", 0, false, false)), [""]);
        assert!(lines.split(b"", 0, true, false).records.is_empty());
    }

    #[test]
    fn long_lines_are_cut_and_flagged() {
        let lines = framing(Rule::Lines);
        let split = lines.split(b"0123456789abcdefXYZ\nok\n", 0, false, false);
        assert_eq!(bodies(&split), ["0123456789abcdef", "ok"]);
        assert!(split.records[0].truncated && !split.records[1].truncated);
        assert!(!split.skip_rest_of_line);
        // Without its newline yet, as long as a record gets: taken now, the rest skipped.
        let split = lines.split(b"0123456789abcdefXYZ", 0, false, false);
        assert_eq!(bodies(&split), ["0123456789abcdef"]);
        assert!(split.skip_rest_of_line);
        assert_eq!(split.next, 19);
    }

    #[test]
    fn multiline_records_by_their_first_or_last_line() {
        let starts = Framing {
            max_log_size: 1024,
            ..framing(Rule::StartsAt(Regex::new("^[0-9]").unwrap()))
        };
        let split = starts.split(b"1 boom\n  at a\n  at b\n2 ok\n", 0, false, false);
        assert_eq!(bodies(&split), ["1 boom\n  at a\n  at b"]);
        assert_eq!(split.next, 21, "the last record may go on");
        assert!(split.waiting);
        let ends = framing(Rule::EndsAt(Regex::new(r";$").unwrap()));
        let split = ends.split(b"a\nb;\nc\n", 0, false, false);
        assert_eq!(bodies(&split), ["a\nb;"]);
        assert_eq!(split.next, 5);
    }

    #[test]
    fn container_pieces_make_one_record() {
        let container = Framing {
            max_log_size: 1 << 20,
            ..framing(Rule::Container)
        };
        let text = b"2024-05-01T10:00:00Z stdout P hel\n2024-05-01T10:00:01Z stdout F lo\n2024-05-01T10:00:02Z stderr P wai";
        let split = container.split(text, 0, false, false);
        assert_eq!(bodies(&split), ["hello"]);
        assert_eq!(split.records[0].stream.as_deref(), Some("stdout"));
        assert_eq!(split.records[0].time_unix_nano, 1_714_557_600_000_000_000);
        assert_eq!(split.next, 67);
        // A partial line with its newline still waits for its last piece.
        let split = container.split(b"2024-05-01T10:00:02Z stderr P wai\n", 0, false, false);
        assert!(split.records.is_empty() && split.waiting);
        let docker = br#"{"log":"a\n","stream":"stdout","time":"2024-05-01T10:00:00Z"}
"#;
        assert_eq!(bodies(&container.split(docker, 0, false, false)), ["a"]);
    }
}
