//! Kafka's framing: every request and response is a big-endian `i32` length followed by
//! that many bytes. The decoder holds at most one unfinished frame between calls, and a
//! length over the limit (or a negative one) is an error: the stream cannot be resynced,
//! so the connection must be closed.

use std::fmt;

/// Why a stream of frames cannot go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// A frame announced more bytes than the limit.
    TooLarge {
        /// The announced length.
        bytes: usize,
        /// The limit (`max_frame_bytes`).
        max: usize,
    },
    /// A frame announced a negative length.
    Negative(i32),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { bytes, max } => {
                write!(f, "a frame of {bytes} bytes is over the limit of {max}")
            }
            FrameError::Negative(len) => write!(f, "a frame announced length {len}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Splits a byte stream into frames of at most `max_frame_bytes` each.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    max_frame_bytes: usize,
    /// Set once a bad length was seen: nothing more is read.
    failed: Option<FrameError>,
}

/// Bytes of the length prefix.
const PREFIX_BYTES: usize = 4;

impl FrameDecoder {
    /// A decoder that accepts frames of up to `max_frame_bytes` bytes (prefix not counted).
    pub fn new(max_frame_bytes: usize) -> FrameDecoder {
        FrameDecoder {
            buf: Vec::new(),
            max_frame_bytes,
            failed: None,
        }
    }

    /// Feeds `bytes`, calling `on_frame` with each complete frame (without its prefix).
    /// After an error every later call returns it again and reads nothing.
    pub fn feed(
        &mut self,
        bytes: &[u8],
        mut on_frame: impl FnMut(&[u8]),
    ) -> Result<(), FrameError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        let result = loop {
            let rest = &self.buf[start..];
            let Some(prefix) = rest.first_chunk::<PREFIX_BYTES>() else {
                break Ok(());
            };
            let len = i32::from_be_bytes(*prefix);
            let Ok(len) = usize::try_from(len) else {
                break Err(FrameError::Negative(len));
            };
            if len > self.max_frame_bytes {
                let max = self.max_frame_bytes;
                break Err(FrameError::TooLarge { bytes: len, max });
            }
            let Some(frame) = rest.get(PREFIX_BYTES..PREFIX_BYTES + len) else {
                break Ok(());
            };
            on_frame(frame);
            start += PREFIX_BYTES + len;
        };
        self.buf.drain(..start);
        if let Err(e) = result {
            self.failed = Some(e);
            self.buf = Vec::new();
        }
        result
    }

    /// Bytes of an unfinished frame held now.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends `body` to `out` as one frame.
    ///
    /// # Panics
    /// If `body` is longer than `i32::MAX` bytes (responses are bounded far below that).
    fn write_frame(body: &[u8], out: &mut Vec<u8>) {
        let len = i32::try_from(body.len()).expect("a frame fits an i32 length");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(body);
    }

    #[test]
    fn frames_split_anywhere_come_out_whole_and_in_order() {
        bolero::check!()
            .with_type::<(Vec<Vec<u8>>, Vec<u8>)>()
            .for_each(|(bodies, cuts)| {
                let mut stream = Vec::new();
                for body in bodies {
                    write_frame(body, &mut stream);
                }
                let max = bodies.iter().map(Vec::len).max().unwrap_or(0);
                let mut decoder = FrameDecoder::new(max);
                let mut got: Vec<Vec<u8>> = Vec::new();
                let mut rest = &stream[..];
                for &cut in cuts {
                    let at = usize::from(cut).min(rest.len());
                    decoder.feed(&rest[..at], |f| got.push(f.to_vec())).unwrap();
                    assert!(decoder.buffered() <= max + PREFIX_BYTES);
                    rest = &rest[at..];
                }
                decoder.feed(rest, |f| got.push(f.to_vec())).unwrap();
                assert_eq!(&got, bodies);
                assert_eq!(decoder.buffered(), 0);
            });
    }

    #[test]
    fn a_frame_over_the_limit_or_negative_stops_the_stream() {
        let mut decoder = FrameDecoder::new(8);
        let mut frames = 0;
        let mut stream = Vec::new();
        write_frame(b"ok", &mut stream);
        write_frame(b"nine byte", &mut stream);
        write_frame(b"after", &mut stream);
        let err = decoder.feed(&stream, |_| frames += 1).unwrap_err();
        assert_eq!(err, FrameError::TooLarge { bytes: 9, max: 8 });
        assert_eq!(frames, 1, "the frame before the bad one is delivered");
        assert_eq!(decoder.feed(b"\0\0\0\0", |_| frames += 1), Err(err));
        assert_eq!((frames, decoder.buffered()), (1, 0));
        let mut decoder = FrameDecoder::new(8);
        let err = decoder.feed(&(-1i32).to_be_bytes(), |_| {}).unwrap_err();
        assert_eq!(err, FrameError::Negative(-1));
        assert!(err.to_string().contains("-1"));
    }
}
