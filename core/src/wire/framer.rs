//! A bounded line framer: splits a byte stream into lines, holding at most
//! `max_line_bytes` of an unfinished one.

/// What the framer found: a whole line, or a line longer than the limit (dropped).
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete line, without `\n` (and without a trailing `\r`). Never empty.
    Line(&'a [u8]),
    /// A line over the limit was discarded; `bytes` of it were seen.
    TooLong {
        /// How many bytes the discarded line had.
        bytes: usize,
    },
}

/// Splits a byte stream into lines, holding at most `max_line_bytes` of a partial line.
/// A longer line is skipped up to its newline and reported once as [`Frame::TooLong`].
#[derive(Debug)]
pub struct LineFramer {
    partial: Vec<u8>,
    max_line_bytes: usize,
    /// Bytes of an over-long line seen so far, while skipping to its newline.
    skipping: Option<usize>,
}

impl LineFramer {
    /// A framer that accepts lines of up to `max_line_bytes` bytes.
    pub fn new(max_line_bytes: usize) -> LineFramer {
        LineFramer {
            partial: Vec::new(),
            max_line_bytes,
            skipping: None,
        }
    }

    /// Changes the longest line accepted from now on (a partial line held is kept).
    pub fn set_max_line_bytes(&mut self, max_line_bytes: usize) {
        self.max_line_bytes = max_line_bytes;
    }

    /// Feeds `bytes`, calling `on_frame` for each complete line (blank lines skipped).
    pub fn feed(&mut self, mut bytes: &[u8], mut on_frame: impl FnMut(Frame<'_>)) {
        while !bytes.is_empty() {
            let newline = bytes.iter().position(|&b| b == b'\n');
            let chunk = &bytes[..newline.unwrap_or(bytes.len())];
            bytes = newline.map_or(&[], |i| &bytes[i + 1..]);
            if let Some(seen) = self.skipping.as_mut() {
                *seen += chunk.len();
                if newline.is_some() {
                    let bytes = *seen;
                    self.skipping = None;
                    on_frame(Frame::TooLong { bytes });
                }
                continue;
            }
            if self.partial.len() + chunk.len() > self.max_line_bytes {
                self.skipping = Some(self.partial.len() + chunk.len());
                self.partial = Vec::new();
                if newline.is_some() {
                    let bytes = self.skipping.take().unwrap_or_default();
                    on_frame(Frame::TooLong { bytes });
                }
                continue;
            }
            if newline.is_none() {
                self.partial.extend_from_slice(chunk);
                continue;
            }
            let line: &[u8] = if self.partial.is_empty() {
                chunk
            } else {
                self.partial.extend_from_slice(chunk);
                &self.partial
            };
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if !line.is_empty() {
                on_frame(Frame::Line(line));
            }
            self.partial.clear();
        }
    }

    /// Bytes of an unfinished line held now (never more than the limit).
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framer_splits_lines_across_chunks_and_skips_long_ones() {
        let mut framer = LineFramer::new(8);
        let mut frames = Vec::new();
        let mut collect = |f: Frame<'_>| {
            frames.push(match f {
                Frame::Line(l) => String::from_utf8(l.to_vec()).unwrap(),
                Frame::TooLong { bytes } => format!("<too long: {bytes}>"),
            })
        };
        framer.feed(b"ab", &mut collect);
        framer.feed(b"c\r\n\nde", &mut collect);
        framer.feed(b"f\n0123456789", &mut collect);
        framer.feed(b"abc\nok\n", &mut collect);
        framer.feed(b"12345678\n123456789\n", &mut collect);
        assert_eq!(
            frames,
            [
                "abc",
                "def",
                "<too long: 13>",
                "ok",
                "12345678",
                "<too long: 9>"
            ]
        );
        assert_eq!(framer.buffered(), 0);
    }

    #[test]
    fn framer_matches_a_split_model_for_any_chunking() {
        bolero::check!()
            .with_type::<(Vec<u8>, Vec<u8>)>()
            .for_each(|(data, cuts)| {
                let max = 6;
                let mut framer = LineFramer::new(max);
                let mut got = Vec::new();
                let mut rest = &data[..];
                for &cut in cuts {
                    let at = (cut as usize).min(rest.len());
                    framer.feed(&rest[..at], |f| got.push(format!("{f:?}")));
                    assert!(framer.buffered() <= max);
                    rest = &rest[at..];
                }
                framer.feed(rest, |f| got.push(format!("{f:?}")));
                // Model: split the complete lines, trim one `\r`, drop blanks.
                let complete = match data.iter().rposition(|&b| b == b'\n') {
                    Some(i) => &data[..i],
                    None => &data[..0],
                };
                let mut want = Vec::new();
                if data.contains(&b'\n') {
                    for line in complete.split(|&b| b == b'\n') {
                        if line.len() > max {
                            want.push(format!("{:?}", Frame::TooLong { bytes: line.len() }));
                        } else {
                            let line = line.strip_suffix(b"\r").unwrap_or(line);
                            if !line.is_empty() {
                                want.push(format!("{:?}", Frame::Line(line)));
                            }
                        }
                    }
                }
                assert_eq!(got, want);
            });
    }
}
