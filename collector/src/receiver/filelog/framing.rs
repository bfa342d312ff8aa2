//! From bytes to records: lines split at newlines, joined by a `multiline` rule or by the
//! container runtimes' partial-line flags, split or cut at `max_log_size`, and trimmed of
//! whitespace, as otelcol's filelog does. Each record knows where in its file it ends, so that
//! a file's offset moves only past whole records.

use std::borrow::Cow;
use std::time::Duration;

use regex::bytes::Regex;

use super::container::{self, Piece};

/// How lines become records.
#[derive(Clone, Debug)]
pub struct Framing {
    pub rule: Rule,
    /// The longest record kept whole; longer ones are split or cut ([`Oversize`]).
    pub max_log_size: usize,
    pub oversize: Oversize,
    /// Whitespace (space, tab, CR, LF) is trimmed off each record's start and end, unless
    /// these keep it.
    pub preserve_leading_whitespace: bool,
    pub preserve_trailing_whitespace: bool,
    /// How long a last record that may not be complete (no newline yet, a multiline record
    /// that may go on, a partial container line) waits before it is taken as it is.
    pub flush_after: Duration,
}

/// What becomes of a record longer than `max_log_size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Oversize {
    /// Records of `max_log_size` bytes, and one of the rest.
    Split,
    /// The first `max_log_size` bytes, flagged `log.record.truncated`; the rest is skipped.
    Truncate,
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

/// A record read from a file: a line's body is the bytes read, borrowed; joined lines own theirs.
#[derive(Debug, PartialEq)]
pub struct Record<'a> {
    pub body: Cow<'a, [u8]>,
    /// From the container runtime: when it was written, the stream, and CRI's tag of its
    /// first piece (`F` for a whole line, `P` for a line written in pieces).
    pub time_unix_nano: u64,
    pub stream: Option<&'static str>,
    pub tag: Option<&'static str>,
    /// Cut at `max_log_size`.
    pub truncated: bool,
    /// The file's offset after it.
    pub end: u64,
}

/// What [`Framing::split`] made of a buffer.
#[derive(Debug, Default)]
pub struct Split<'a> {
    pub records: Vec<Record<'a>>,
    /// Where the file continues once the records are acknowledged.
    pub progress: Progress,
    /// Whether data past `progress.next` waits for more (a record not known to be complete).
    pub waiting: bool,
}

/// Where a file continues after the records of a read.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Progress {
    /// The offset after the last record taken: what follows is read again.
    pub next: u64,
    /// Whether the last record was a line cut at `max_log_size` with no newline yet: the
    /// rest of that line is to be skipped.
    pub skip_rest_of_line: bool,
}

impl Framing {
    /// Splits `buffer`, read from the file at `start`, into records. A last record that may
    /// not be complete is left for the next read, unless `flush` (it waited long enough) or
    /// `full` (the buffer is as large as a read gets, so it cannot wait for more) says to take
    /// it as it is.
    pub fn split<'a>(&self, buffer: &'a [u8], start: u64, flush: bool, full: bool) -> Split<'a> {
        let mut lines = Vec::new();
        let mut at = 0;
        while at < buffer.len() {
            match memchr::memchr(b'\n', &buffer[at..]) {
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
            progress: Progress {
                next: start,
                skip_rest_of_line: false,
            },
            ..Split::default()
        };
        for group in groups {
            let end = group.last().map_or(start, |l| l.end);
            let Record {
                body,
                time_unix_nano,
                stream,
                tag,
                ..
            } = self.record(group);
            let max = self.max_log_size;
            let oversized = body.len() > max;
            let cut = oversized && self.oversize == Oversize::Truncate;
            let complete = group.last().is_some_and(|l| l.complete);
            // Of a line still being written, only whole pieces are taken: the rest waits.
            let length = body.len();
            let taken = match &body {
                Cow::Borrowed(line) if oversized && !cut && !complete => line.len() / max * max,
                _ => length,
            };
            let pieces = match (oversized, self.oversize) {
                (false, _) => vec![body],
                (true, Oversize::Truncate) => vec![part(&body, 0..max)],
                (true, Oversize::Split) => (0..taken)
                    .step_by(max)
                    .map(|at| part(&body, at..taken.min(at + max)))
                    .collect(),
            };
            for piece in pieces {
                let body = self.trim(piece);
                // A blank line is no record; a container's empty line is one.
                if body.is_empty() && !matches!(self.rule, Rule::Container) {
                    continue;
                }
                split.records.push(Record {
                    body,
                    time_unix_nano,
                    stream,
                    tag,
                    truncated: cut,
                    end,
                });
            }
            split.progress = Progress {
                next: end - (length - taken) as u64,
                skip_rest_of_line: cut && !complete,
            };
        }
        split.waiting = split.progress.next < start + buffer.len() as u64;
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

    fn record<'a>(&self, lines: &[Line<'a>]) -> Record<'a> {
        let mut record = Record {
            body: Cow::Borrowed(&[]),
            time_unix_nano: 0,
            stream: None,
            tag: None,
            truncated: false,
            end: 0,
        };
        if let ([line], false) = (lines, matches!(self.rule, Rule::Container)) {
            record.body = Cow::Borrowed(line.bytes);
            return record;
        }
        let body = record.body.to_mut();
        let mut parsed = false;
        for (i, line) in lines.iter().enumerate() {
            match &self.rule {
                Rule::Container => match container::parse(line.bytes) {
                    Some(Piece {
                        time_unix_nano,
                        stream,
                        tag,
                        log,
                        ..
                    }) => {
                        if !parsed {
                            parsed = true;
                            record.time_unix_nano = time_unix_nano;
                            (record.stream, record.tag) = (stream, tag);
                        }
                        body.extend_from_slice(&log);
                    }
                    // Not a container runtime's line: kept as it is.
                    None => body.extend_from_slice(line.bytes),
                },
                _ => {
                    if i > 0 {
                        body.push(b'\n');
                    }
                    body.extend_from_slice(line.bytes);
                }
            }
            // Past the cut, the rest is not kept.
            if self.oversize == Oversize::Truncate && body.len() > self.max_log_size {
                break;
            }
        }
        record
    }

    /// `body` less the whitespace trimmed off its ends.
    fn trim<'a>(&self, body: Cow<'a, [u8]>) -> Cow<'a, [u8]> {
        let space = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
        let start = match self.preserve_leading_whitespace {
            true => 0,
            false => body.iter().position(|b| !space(b)).unwrap_or(body.len()),
        };
        let end = match self.preserve_trailing_whitespace {
            true => body.len(),
            false => body.iter().rposition(|b| !space(b)).map_or(0, |i| i + 1),
        };
        if (start, end) == (0, body.len()) {
            body
        } else {
            part(&body, start..end.max(start))
        }
    }
}

/// The bytes `range` of `body`: borrowed from the read if `body` is.
fn part<'a>(body: &Cow<'a, [u8]>, range: std::ops::Range<usize>) -> Cow<'a, [u8]> {
    match body {
        Cow::Borrowed(bytes) => Cow::Borrowed(&bytes[range]),
        Cow::Owned(bytes) => Cow::Owned(bytes[range].to_vec()),
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
            oversize: Oversize::Truncate,
            preserve_leading_whitespace: false,
            preserve_trailing_whitespace: false,
            flush_after: Duration::from_millis(500),
        }
    }

    fn bodies(split: &Split<'_>) -> Vec<String> {
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
        assert_eq!(split.progress.next, 108);
        assert!(split.waiting);
        let flushed = lines.split(b"thr", 108, true, false);
        assert_eq!(bodies(&flushed), ["thr"]);
        assert_eq!((flushed.progress.next, flushed.waiting), (111, false));
        // A blank line is no record (as in otelcol), but is passed.
        let blank = lines.split(b" \t\r\n", 0, false, false);
        assert!(blank.records.is_empty());
        assert_eq!(blank.progress.next, 4);
        assert!(lines.split(b"", 0, true, false).records.is_empty());
    }

    #[test]
    fn whitespace_is_trimmed_unless_kept() {
        let text = b"  lead and trail \t\r\n";
        let trimmed = framing(Rule::Lines);
        assert_eq!(
            bodies(&trimmed.split(text, 0, false, false)),
            ["lead and trail"]
        );
        let leading = Framing {
            preserve_leading_whitespace: true,
            max_log_size: 64,
            ..framing(Rule::Lines)
        };
        assert_eq!(
            bodies(&leading.split(text, 0, false, false)),
            ["  lead and trail"]
        );
        let both = Framing {
            preserve_trailing_whitespace: true,
            ..leading
        };
        assert_eq!(
            bodies(&both.split(text, 0, false, false)),
            ["  lead and trail \t\r"]
        );
    }

    #[test]
    fn long_lines_are_split_by_default() {
        let split = Framing {
            oversize: Oversize::Split,
            ..framing(Rule::Lines)
        };
        let read = split.split(b"0123456789abcdefXYZ\nok\n", 0, false, false);
        assert_eq!(bodies(&read), ["0123456789abcdef", "XYZ", "ok"]);
        assert!(read.records.iter().all(|r| !r.truncated));
        assert!(
            read.records
                .iter()
                .all(|r| matches!(r.body, Cow::Borrowed(_)))
        );
        // Without its newline yet: its whole pieces now, the rest when it ends or waited.
        let read = split.split(b"0123456789abcdefXYZ", 0, false, false);
        assert_eq!(bodies(&read), ["0123456789abcdef"]);
        assert_eq!(read.progress.next, 16);
        assert!(read.waiting && !read.progress.skip_rest_of_line);
    }

    #[test]
    fn long_lines_are_cut_and_flagged() {
        let lines = framing(Rule::Lines);
        let split = lines.split(b"0123456789abcdefXYZ\nok\n", 0, false, false);
        assert_eq!(bodies(&split), ["0123456789abcdef", "ok"]);
        assert!(split.records[0].truncated && !split.records[1].truncated);
        assert!(!split.progress.skip_rest_of_line);
        // Without its newline yet, as long as a record gets: taken now, the rest skipped.
        let split = lines.split(b"0123456789abcdefXYZ", 0, false, false);
        assert_eq!(bodies(&split), ["0123456789abcdef"]);
        assert!(split.progress.skip_rest_of_line);
        assert_eq!(split.progress.next, 19);
    }

    #[test]
    fn multiline_records_by_their_first_or_last_line() {
        let starts = Framing {
            max_log_size: 1024,
            ..framing(Rule::StartsAt(Regex::new("^[0-9]").unwrap()))
        };
        let split = starts.split(b"1 boom\n  at a\n  at b\n2 ok\n", 0, false, false);
        assert_eq!(bodies(&split), ["1 boom\n  at a\n  at b"]);
        assert_eq!(split.progress.next, 21, "the last record may go on");
        assert!(split.waiting);
        // Split past max_log_size, the whole record is kept.
        let split = Framing {
            max_log_size: 8,
            oversize: Oversize::Split,
            ..starts.clone()
        };
        let read = split.split(b"1 boom\n  at a\n  at b\n2\n", 0, false, false);
        assert_eq!(bodies(&read), ["1 boom", "at a", "at b"]);
        let ends = framing(Rule::EndsAt(Regex::new(r";$").unwrap()));
        let split = ends.split(b"a\nb;\nc\n", 0, false, false);
        assert_eq!(bodies(&split), ["a\nb;"]);
        assert_eq!(split.progress.next, 5);
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
        assert_eq!(split.records[0].stream, Some("stdout"));
        assert_eq!(split.records[0].tag, Some("P"));
        assert_eq!(split.records[0].time_unix_nano, 1_714_557_600_000_000_000);
        assert_eq!(split.progress.next, 67);
        // A partial line with its newline still waits for its last piece.
        let split = container.split(b"2024-05-01T10:00:02Z stderr P wai\n", 0, false, false);
        assert!(split.records.is_empty() && split.waiting);
        let docker = br#"{"log":"a\n","stream":"stdout","time":"2024-05-01T10:00:00Z"}
"#;
        assert_eq!(bodies(&container.split(docker, 0, false, false)), ["a"]);
    }
}
